"""`ltjax-methods`: the methods a config can name, and one method's keys with their defaults and meaning.

    ltjax-methods            # every method: name, head, network, phases, summary
    ltjax-methods ffds       # FFDS's keys (set them with --config.loss.<key>=<value>), phases, head, notes
"""
from __future__ import annotations

import argparse
import sys

from ltjax import commands
from ltjax.methods import METHODS, Method, get


def _phases(method: Method) -> str:
    return " -> ".join(phase.name + (f" (from loss.{phase.start})" if phase.start else "") for phase in method.phases)


def _network(method: Method) -> str:
    """The network with branches and the partner sampler the method declares ("plain": neither)."""
    network = method.network.name if method.network else "plain"
    return network + (f", {method.partners} partners" if method.partners else "")


def overview() -> str:
    """One line per method."""
    width = max(map(len, METHODS))
    heads = max(len(method.head) for method in METHODS.values())
    networks = max(len(_network(method)) for method in METHODS.values())
    lines = [f"{'method':<{width}}  {'head':<{heads}}  {'network':<{networks}}  phases / summary"]
    for name, method in METHODS.items():
        lines.append(f"{name:<{width}}  {method.head:<{heads}}  {_network(method):<{networks}}  {_phases(method)}")
        lines.append(f"{'':<{width}}  {'':<{heads}}  {'':<{networks}}  {method.summary}")
    lines.append("\nltjax-methods NAME shows a method's keys; set them with --config.loss.<key>=<value>.")
    return "\n".join(lines)


def describe(name: str) -> str:
    """A method's summary, phases, head and every key with its default, kind and meaning."""
    method = get(name)
    lines = [f"{method.name}: {method.summary}", f"phases: {_phases(method)}", f"head: {method.head}",
             f"network: {_network(method)}"]
    if method.keys:
        width = max(map(len, method.keys))
        lines.append("keys (--config.loss.<key>=<value>):")
        for key, spec in method.keys.items():
            choices = f" [{', '.join(map(str, spec.choices))}]" if spec.choices else ""
            lines.append(f"  {key:<{width}}  {spec.default!r:<12} {spec.kind:<6}  {spec.help}{choices}")
    else:
        lines.append("keys: none")
    if method.notes:
        lines.append(f"notes: {method.notes}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`ltjax-methods` on `argv` (default: the command line); its exit code (`ltjax.commands`)."""

    def listing(arguments: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="ltjax-methods",
                                         description=__doc__.splitlines()[0].split(": ", 1)[1])
        parser.add_argument("name", nargs="?", help="a method to describe")
        commands.add_debug_flag(parser)
        name = parser.parse_args(arguments).name
        print(describe(name) if name else overview())
        return 0

    return commands.run("ltjax-methods", listing, argv)


def run() -> None:
    sys.exit(main())
