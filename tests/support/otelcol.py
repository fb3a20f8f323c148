"""A real OTLP receiver for the trace tests: the OpenTelemetry Collector, built from the Go module proxy.

No Python package ships a working OTLP receiver, so the tests build the Collector's own
components (its OTLP receiver and its debug exporter, at one pinned release) into a small
binary, cached outside the clone with the interop peers (tests/support/peers.py).
The first build takes minutes (``.ci/test`` starts it, with the other builds, before the suite
runs); later runs reuse the binary. Spans the collector receives are
read back from its debug exporter's detailed output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import peers
from tests.support.free_port import free_port

RELEASE = "v0.165.0"  # the collector modules of one release (v1.71.0 for the stable ones)
STABLE = "v1.71.0"

_MAIN = """package main

import (
\t"log"

\t"go.opentelemetry.io/collector/component"
\t"go.opentelemetry.io/collector/confmap"
\t"go.opentelemetry.io/collector/confmap/provider/fileprovider"
\t"go.opentelemetry.io/collector/exporter"
\t"go.opentelemetry.io/collector/exporter/debugexporter"
\t"go.opentelemetry.io/collector/otelcol"
\t"go.opentelemetry.io/collector/receiver"
\t"go.opentelemetry.io/collector/receiver/otlpreceiver"
\t"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
\treceivers, err := otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory())
\tif err != nil {
\t\treturn otelcol.Factories{}, err
\t}
\texporters, err := otelcol.MakeFactoryMap[exporter.Factory](debugexporter.NewFactory())
\tif err != nil {
\t\treturn otelcol.Factories{}, err
\t}
\treturn otelcol.Factories{Receivers: receivers, Exporters: exporters, Telemetry: otelconftelemetry.NewFactory()}, nil
}

func main() {
\tproviders := []confmap.ProviderFactory{fileprovider.NewFactory()}
\tsettings := otelcol.CollectorSettings{
\t\tBuildInfo: component.BuildInfo{Command: "otelcol-pyspire-tests", Description: "OTLP receiver for tests"},
\t\tFactories: components,
\t\tConfigProviderSettings: otelcol.ConfigProviderSettings{
\t\t\tResolverSettings: confmap.ResolverSettings{ProviderFactories: providers, DefaultScheme: "file"},
\t\t},
\t}
\tif err := otelcol.NewCommand(settings).Execute(); err != nil {
\t\tlog.Fatal(err)
\t}
}
"""

_BINARY = "otelcol-pyspire-tests"
_MODULES = (
    f"go.opentelemetry.io/collector/otelcol@{RELEASE}",
    f"go.opentelemetry.io/collector/receiver/otlpreceiver@{RELEASE}",
    f"go.opentelemetry.io/collector/exporter/debugexporter@{RELEASE}",
    f"go.opentelemetry.io/collector/service@{RELEASE}",
    f"go.opentelemetry.io/collector/confmap/provider/fileprovider@{STABLE}",
)


def collector() -> peers.BuiltPeer:
    """The collector, built on first use into the peers cache (tests/support/peers.py)."""

    def build(staging: Path, log: Path) -> None:
        work = staging / "src"
        work.mkdir()
        (work / "main.go").write_text(_MAIN)
        (work / "go.mod").write_text("module otelcolpyspiretests\n\ngo 1.24\n")
        env = {**peers.go_env(staging), "GOFLAGS": "-buildvcs=false -mod=mod"}
        peers.run_logged(["go", "get", *_MODULES], work, log, env)
        peers.run_logged(["go", "build", *peers.FAKE_BUILD_FLAGS, "-o", str(staging / _BINARY), "."], work, log, env)
        shutil.rmtree(work)

    return peers.cached_build("otelcol", RELEASE, [_BINARY], build)


@dataclass(frozen=True)
class Span:
    """A span the collector received."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]


_FIELD = re.compile(r"^\s+(Trace ID|Parent ID|ID|Name)\s+: ?(.*)$")
_ATTRIBUTE = re.compile(r"^\s+-> ([\w.]+): \w+\((.*)\)$")


def parse_spans(output: str) -> list[Span]:
    """The spans in the debug exporter's detailed output, each with its resource's service.name."""
    spans: list[Span] = []
    service = ""
    current: dict[str, str] | None = None
    attributes: dict[str, str] = {}
    in_resource = False

    def flush() -> None:
        if current is not None and "Name" in current:
            spans.append(
                Span(
                    service,
                    current["Name"],
                    current.get("Trace ID", ""),
                    current.get("ID", ""),
                    current.get("Parent ID", ""),
                    dict(attributes),
                )
            )

    for line in output.splitlines():
        if line.startswith("Resource attributes:"):
            flush()
            current, attributes, in_resource = None, {}, True
            continue
        if line.startswith("Span #"):
            flush()
            current, attributes, in_resource = {}, {}, False
            continue
        attribute = _ATTRIBUTE.match(line)
        if attribute:
            if in_resource and attribute.group(1) == "service.name":
                service = attribute.group(2)
            elif current is not None:
                attributes[attribute.group(1)] = attribute.group(2)
            continue
        field = _FIELD.match(line)
        if field and current is not None:
            current[field.group(1)] = field.group(2).strip()
    flush()
    return spans


@dataclass
class Collector:
    """A running collector: where to send OTLP, and what it printed."""

    http_endpoint: str
    grpc_endpoint: str
    log_path: Path

    def spans(self) -> list[Span]:
        return parse_spans(self.log_path.read_text(errors="replace"))


@contextmanager
def running_collector(directory: Path, built: peers.BuiltPeer) -> Iterator[Collector]:
    """``built``'s collector receiving OTLP over HTTP and gRPC on free loopback ports, until the block ends."""
    binary = built.path(_BINARY)
    http_port, grpc_port = free_port(), free_port()
    config = directory / "otelcol.yaml"
    config.write_text(
        "receivers:\n  otlp:\n    protocols:\n"
        f"      http:\n        endpoint: 127.0.0.1:{http_port}\n"
        f"      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n"
        "exporters:\n  debug:\n    verbosity: detailed\n"
        "service:\n  telemetry:\n    metrics:\n      level: none\n"
        "  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
    )
    log_path = directory / "otelcol.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(binary), f"--config=file:{config}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "Everything is ready" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the collector did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield Collector(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log_path)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
