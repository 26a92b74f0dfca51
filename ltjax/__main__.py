"""`python -m ltjax` is `ltjax-train`."""
from ltjax.train.main import run

if __name__ == "__main__":
    run()
