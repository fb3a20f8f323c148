"""pyspire.spiffe throughput next to the bare crypto it is built on (issue 2's targets).

Prints, in one run on one pinned core:
- SpiffeId.parse per second;
- X509-SVID verify per second (leaf signed by a root in the bundle: one signature) next to
  one bare ECDSA P-256 verify with cryptography; and through an intermediate, where the
  intermediate's link is remembered so the steady state is still one signature;
- JWT-SVID validate per second (ES256) next to bare ``jwt.decode`` with the key object and
  an audience check.

Targets: X509-SVID verify >= 50% of the bare ECDSA verify rate; JWT-SVID validate >= 60%
of the bare jwt.decode rate. Run: python bench/spiffe_bench.py [--write]
(--write updates the section in bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cryptography
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyspire.spiffe import Bundle, JwtSvid, SpiffeId, TrustDomain, verify_x509_svid

from bench.results import update_section
from tests.support.pki import make_ca, make_leaf

TRIALS = 5
TRIAL_SECONDS = 1.0


def _trial(operation: Callable[[], object]) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + TRIAL_SECONDS
    while True:
        for _ in range(100):
            operation()
        count += 100
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def rates(operations: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Operations per second of each operation in TRIALS rounds, the operations taken in turn.

    Taking them in turn, rather than one after the other, lets a ratio be computed within a
    round, on the same machine: this one's speed drifts by tens of percent within a minute.
    """
    for operation in operations.values():
        for _ in range(200):
            operation()
    found: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(TRIALS):
        for name, operation in operations.items():
            found[name].append(_trial(operation))
    return found


def ratio(found: dict[str, list[float]], name: str, reference: str) -> float:
    """The median over the rounds of ``name``'s rate over ``reference``'s."""
    return statistics.median(a / b for a, b in zip(found[name], found[reference], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    td = TrustDomain("example.org")
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    data = os.urandom(200)
    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))

    root = make_ca()
    leaf = make_leaf(root)
    bundle = Bundle(td, [root.certificate])
    direct_chain = [leaf.certificate]
    intermediate = make_ca(issuer=root, name="intermediate")
    leaf2 = make_leaf(intermediate)
    via_chain = [leaf2.certificate, intermediate.certificate]

    jwt_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    claims = {
        "sub": "spiffe://example.org/workload",
        "aud": ["spiffe://example.org/db"],
        "exp": int((now + timedelta(hours=1)).timestamp()),
        "iat": int(now.timestamp()),
    }
    token = jwt.encode(claims, jwt_key, algorithm="ES256", headers={"kid": "k1", "typ": "JWT"})
    jwt_public = jwt_key.public_key()
    jwt_bundle = Bundle(td, jwt_authorities={"k1": jwt_public})

    found = rates(
        {
            "parse": lambda: SpiffeId.parse("spiffe://example.org/ns/default/sa/frontend"),
            "bare_verify": lambda: public.verify(signature, data, ec.ECDSA(hashes.SHA256())),
            "x509_direct": lambda: verify_x509_svid(direct_chain, bundle),
            "x509_via": lambda: verify_x509_svid(via_chain, bundle),
            "bare_jwt": lambda: jwt.decode(token, jwt_public, algorithms=["ES256"], audience="spiffe://example.org/db"),
            "svid_jwt": lambda: JwtSvid.parse_and_validate(token, jwt_bundle, ["spiffe://example.org/db"]),
        }
    )
    parse_rate, bare_verify, x509_direct, x509_via, bare_jwt, svid_jwt = (
        statistics.median(found[name])
        for name in ("parse", "bare_verify", "x509_direct", "x509_via", "bare_jwt", "svid_jwt")
    )
    x509_ratio = ratio(found, "x509_direct", "bare_verify")
    via_ratio = ratio(found, "x509_via", "bare_verify")
    jwt_ratio = ratio(found, "svid_jwt", "bare_jwt")
    rows = [
        ("SpiffeId.parse", f"{parse_rate:,.0f}/s", "", ""),
        ("bare ECDSA P-256 verify (cryptography)", f"{bare_verify:,.0f}/s", "", ""),
        (
            "X509-SVID verify, leaf under a root (1 signature)",
            f"{x509_direct:,.0f}/s",
            f"{x509_ratio:.0%} of bare verify",
            "met" if x509_ratio >= 0.5 else "NOT MET",
        ),
        (
            "X509-SVID verify, leaf via an intermediate (remembered link)",
            f"{x509_via:,.0f}/s",
            f"{via_ratio:.0%} of bare verify",
            "met" if via_ratio >= 0.5 else "NOT MET",
        ),
        ("bare jwt.decode ES256 + aud (key object)", f"{bare_jwt:,.0f}/s", "", ""),
        (
            "JwtSvid.parse_and_validate ES256",
            f"{svid_jwt:,.0f}/s",
            f"{jwt_ratio:.0%} of bare decode",
            "met" if jwt_ratio >= 0.6 else "NOT MET",
        ),
    ]
    table = ["| operation | rate | ratio | target |", "|---|---|---|---|"]
    table += [f"| {name} | {value} | {ratio} | {target} |" for name, value, ratio, target in rows]
    machine = (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), pinned to one core; "
        f"Python {platform.python_version()}, cryptography {cryptography.__version__}, PyJWT {jwt.__version__}; "
        f"{TRIALS} rounds of {TRIAL_SECONDS:g} s per operation, taken in turn; rates and ratios are "
        f"medians over the rounds; {datetime.now(UTC):%Y-%m-%d}"
    )
    body = "\n".join(
        [
            "Targets (issue 2): X509-SVID verify >= 50% of the bare ECDSA P-256 verify rate;",
            "JWT-SVID validate >= 60% of bare `jwt.decode` with a known key.",
            "",
            *table,
            "",
            machine,
        ]
    )
    print(body)
    if args.write:
        update_section("pyspire.spiffe (bench/spiffe_bench.py)", body)


if __name__ == "__main__":
    main()
