import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = ["lenet", "resnet", "digits_mlp"]


def sample_ini(name: str) -> str:
    return os.path.join(ROOT, "sample_models", name, f"{name}.ini")
