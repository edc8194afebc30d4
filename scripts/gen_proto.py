"""Generate the Python protobuf/gRPC stubs for protos/stqa/v1/*.proto into stqa/v1/ (`make proto`).

The stubs are committed (tests/test_proto_stubs.py checks they are current), so installing stqa needs
no code generation. ``-Iprotos`` makes the generated imports read ``stqa.v1.video_qa_pb2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under ``proto_root``, sorted (stable output)."""
    return sorted(proto_root.rglob("*.proto"))


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run grpc_tools.protoc on every proto, writing ``_pb2.py``, ``_pb2.pyi`` and ``_pb2_grpc.py`` under
    ``out_dir`` (which mirrors the package layout, e.g. ``out_dir/stqa/v1``). Returns the files written."""
    from importlib.resources import files

    from grpc_tools import protoc

    well_known = str(files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = proto_files(proto_root)
    if not protos:
        raise FileNotFoundError(f"no .proto files under {proto_root}")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(proto_root)) for p in protos),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}: {' '.join(args)}")
    written = []
    for proto in protos:
        stem = proto.relative_to(proto_root).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            path = out_dir / f"{stem}{suffix}"
            if not path.is_file():
                raise RuntimeError(f"protoc did not write {path}")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root the package tree is written under "
                        "(default: the repository, i.e. stqa/v1/ in place)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out) if path.is_relative_to(args.out) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
