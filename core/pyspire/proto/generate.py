"""Regenerate the protobuf and grpclib stubs committed beside each .proto file.

    python -m pyspire.proto.generate          # rewrite the stubs in place
    python -m pyspire.proto.generate --check  # exit 1 and list the stubs that are stale

Needs the dev extras (grpcio-tools, pinned so output is reproducible, and grpclib's protoc
plugin from the same virtualenv). The Workload API and Envoy's SDS get messages only: their
service paths are written by hand (``spiffe/workload/service.py``, ``envoy_sds.py``).

The Workload API stub belongs to the workload library (pyspire-spiffe), which services install
beside whatever protobuf their other dependencies pin. protoc opens every stub with a gate that
refuses any protobuf runtime older than protoc itself, although what this stub does (add its
serialized descriptor to the pool, build the classes with ``internal.builder``) works on every
runtime since 3.20. The gate is taken out of that one stub, here, so regenerating stays
reproducible; tests/library/test_distribution.py runs the library on the oldest
protobuf its pyproject allows. The SPIRE API stubs keep their gate: only the operator's
distribution uses them, with its own protobuf floor.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PROTO_DIR.parent.parent  # the directory holding the "pyspire" package
MESSAGES_ONLY = {PROTO_DIR / "spiffe" / "workload" / "workload.proto", PROTO_DIR / "envoy" / "sds.proto"}
UNGATED = {Path("pyspire", "proto", "spiffe", "workload", "workload_pb2.py")}
"""Stubs of the workload library, generated without protoc's runtime-version gate."""
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_grpc.py")
_GATE_IMPORT = "from google.protobuf import runtime_version as _runtime_version\n"
_GATE_CALL = re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:    .*\n)*?\)\n")
_UNGATED_NOTE = (
    "# pyspire.proto.generate took out protoc's runtime-version gate: this stub runs on every\n"
    "# protobuf since 3.20, and the workload library allows them (see generate.py).\n"
)


def _protoc_plugin() -> Path:
    plugin = Path(sys.executable).parent / "protoc-gen-grpclib_python"
    if not plugin.exists():
        found = shutil.which("protoc-gen-grpclib_python")
        if found is None:
            raise SystemExit("protoc-gen-grpclib_python not found: install the dev extras (grpclib)")
        plugin = Path(found)
    return plugin


def _generate(output_root: Path) -> None:
    from grpc_tools import protoc  # noqa: PLC0415 - a dev-only dependency

    includes = Path(protoc.__file__).parent / "_proto"
    protos = sorted(PROTO_DIR.rglob("*.proto"))
    for proto in protos:
        relative = proto.relative_to(SOURCE_ROOT)
        args = [
            "grpc_tools.protoc",
            f"-I{SOURCE_ROOT}",
            f"-I{includes}",
            f"--python_out={output_root}",
            f"--pyi_out={output_root}",
        ]
        if proto not in MESSAGES_ONLY:
            args += [f"--plugin=protoc-gen-grpclib_python={_protoc_plugin()}", f"--grpclib_python_out={output_root}"]
        if protoc.main([*args, str(relative)]) != 0:
            raise SystemExit(f"protoc failed on {relative}")
    for stub in UNGATED:
        path = output_root / stub
        path.write_text(without_version_gate(path.read_text(), stub))


def without_version_gate(source: str, name: Path) -> str:
    """``source`` (a protoc Python stub) without the call that refuses older protobuf runtimes."""
    stripped, calls = _GATE_CALL.subn(_UNGATED_NOTE, source.replace(_GATE_IMPORT, "", 1))
    if calls != 1 or "_runtime_version" in stripped:
        raise SystemExit(f"{name}: protoc's runtime-version gate is not where generate.py expects it")
    return stripped


def _generated_files(root: Path) -> set[Path]:
    return {
        path.relative_to(root)
        for path in (root / "pyspire" / "proto").rglob("*")
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def check() -> list[Path]:
    """The committed stubs that differ from freshly generated ones (or are missing/extra)."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        _generate(root)
        fresh = _generated_files(root)
        committed = _generated_files(SOURCE_ROOT)
        stale = sorted(fresh ^ committed)
        stale += sorted(
            path for path in fresh & committed if not filecmp.cmp(root / path, SOURCE_ROOT / path, shallow=False)
        )
        return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if args.check:
        stale = check()
        for path in stale:
            print(f"stale: {path}")
        raise SystemExit(1 if stale else 0)
    for path in _generated_files(SOURCE_ROOT):
        (SOURCE_ROOT / path).unlink()
    _generate(SOURCE_ROOT)
    for directory in {p.parent for p in PROTO_DIR.rglob("*.proto")} | {PROTO_DIR}:
        for package in (directory, *directory.relative_to(PROTO_DIR).parents):
            init = package / "__init__.py" if package.is_absolute() else PROTO_DIR / package / "__init__.py"
            if not init.exists():
                init.write_text("")
    subprocess.run([sys.executable, "-m", "pyspire.proto.generate", "--check"], check=True)


if __name__ == "__main__":
    main()
