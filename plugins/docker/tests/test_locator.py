"""Container IDs from cgroup paths, in every layout SPIRE's locators handle (text in, ID out)."""

from __future__ import annotations

import pytest
from pyspire.plugin.errors import FailedPrecondition, Internal
from pyspire_docker.locator import (
    CgroupMatchers,
    check_socket_template,
    container_id,
    legacy_container_id,
    parse_cgroups,
    podman_socket,
)

ID = "6469646e742065787065637420616e796f6e6520746f20726561642074686973"
OTHER = "41e4ab61d2860b0e1467de0da0a9c6068012761febec402dc04a5a94f32ea867"
POD = "2c48913c-b29f-11e7-9350-020968147796"


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        (f"10:devices:/docker/{ID}", ID),  # cgroupfs driver, v1
        (f"4:devices:/system.slice/docker-{ID}.scope", ID),  # systemd driver (RHEL)
        (f"0::/system.slice/docker-{ID}.scope", ID),  # systemd driver, v2
        (f"4:devices:/system.slice/{ID}.scope", ID),  # no docker- prefix
        (f"6:devices:/docker/{ID}/docker/{ID}/system.slice/containerd.service", ID),  # Docker for Desktop
        (f"4:pids:/docker/{OTHER}/kubepods/besteffort/pod{POD}/{ID}", ID),  # a pod's container in kind
        (f"0::/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/cri-containerd-{ID}.scope", ID),
        (f"1:name=systemd:/kubepods-besteffort-pod{POD.replace('-', '_')}.slice:cri-containerd:{ID}", ID),
        (f"0::/machine.slice/libpod-{ID}.scope/container", ID),  # Podman
        (f"0::/../{ID}", ID),  # seen from inside another cgroup namespace
        (f"0::/docker/{ID.upper()}", ID.upper()),
        ("0::/user.slice/user-1000.slice/session-2.scope\n4:memory:/process_api/1451d0f1", ""),
        ("0::/", ""),
        (f"0::/docker/{ID}/", ""),  # SPIRE stops at an empty last segment
        (f"0::/docker/{ID}0", ""),  # 65 digits: not an ID
        (f"0::/docker/x{ID}", ""),  # glued to a word character
        (f"9:name=systemd:/\n8:pids:/docker/{ID}", ID),  # lines naming nothing may come first
        (f"8:pids:/docker/{ID}\n0::/docker/{ID}", ID),
    ],
)
def test_the_container_id_is_found_in_every_layout(cgroup: str, expected: str) -> None:
    assert container_id(parse_cgroups(cgroup)) == expected


@pytest.mark.parametrize(
    "cgroup",
    [
        f"10:devices:/docker/{ID}\n4:devices:/system.slice/docker-{OTHER}.scope",
        # kind on macOS: the pod's container on one line, the kind node on the v2 line
        f"1:cpuset:/docker/{OTHER}/kubepods/besteffort/pod{POD}/{ID}\n0::/docker/{OTHER}/system.slice/containerd.service",
        # a line naming no container after one that did
        f"8:pids:/docker/{ID}\n7:blkio:/",
    ],
)
def test_cgroups_that_disagree_are_refused(cgroup: str) -> None:
    with pytest.raises(FailedPrecondition, match="multiple container IDs found"):
        container_id(parse_cgroups(cgroup))


def test_a_malformed_cgroup_line_is_refused() -> None:
    with pytest.raises(Internal, match="contains 2 colon separated fields but expected at least 3"):
        parse_cgroups("0:/docker")


@pytest.mark.parametrize(
    ("patterns", "cgroup", "expected"),
    [
        (["/docker/*/<id>"], f"10:devices:/docker/{ID}", ""),
        (["/docker/*/<id>", "/docker/<id>"], f"10:devices:/docker/{ID}", ID),
        (["/my.slice/*/<id>/*"], "3:cpu:/my.slice/a/abc/b\n2:pids:/other", "abc"),
        (["/docker/<id>"], f"10:devices:/docker/{ID}\n9:pids:/", ID),  # unmatched lines pass
    ],
)
def test_legacy_matchers_take_the_id_token(patterns: list[str], cgroup: str, expected: str) -> None:
    assert legacy_container_id(CgroupMatchers(patterns), parse_cgroups(cgroup)) == expected


def test_legacy_matchers_refuse_an_empty_id_and_two_ids() -> None:
    with pytest.raises(Internal, match="a pattern matched, but no container id was found"):
        legacy_container_id(CgroupMatchers(["/docker/<id>"]), parse_cgroups("10:cpu:/docker/"))
    with pytest.raises(FailedPrecondition, match=f"multiple container IDs found in cgroups \\({ID}, {OTHER}\\)"):
        legacy_container_id(CgroupMatchers(["/docker/<id>"]), parse_cgroups(f"1:a:/docker/{ID}\n2:b:/docker/{OTHER}"))


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (["/docker/"], 'must contain the container id token "<id>" exactly once'),
        (["/<id>/<id>"], "exactly once"),
        (["/a/b/<id>", "/*/b/<id>"], "patterns must not be ambiguous: \\['/\\*/b/<id>', '/a/b/<id>'\\]"),
        (["/a/<id>", "/a/<id>"], "must not be ambiguous"),
        ([], "at least 1 pattern"),
    ],
)
def test_bad_matchers_are_refused(patterns: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace('"', "'")):
        CgroupMatchers(patterns)


def test_patterns_of_different_shape_are_not_ambiguous() -> None:
    matchers = CgroupMatchers(["/a/b/<id>", "/a/c/<id>", "/a/<id>"])
    assert matchers.find("/a/c/x") == "x"
    assert matchers.find("/a/c/x/y") is None


TEMPLATE = "unix:///run/user/%d/podman/podman.sock"
ROOTFUL = "unix:///run/podman/podman.sock"


@pytest.mark.parametrize(
    ("cgroup", "socket"),
    [
        (
            f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope",
            "unix:///run/user/1000/podman/podman.sock",
        ),
        (f"0::/machine.slice/libpod-{ID}.scope", ROOTFUL),
        (
            f"0::/user.slice/user-2000.slice/user@2000.service/user.slice/libpod/{ID}",
            "unix:///run/user/2000/podman/podman.sock",
        ),
        (f"0::/user.slice/user-4294967296.slice/user@4294967296.service/user.slice/libpod-{ID}.scope", ROOTFUL),
        (f"0::/system.slice/docker-{ID}.scope", None),
    ],
)
def test_podman_containers_are_looked_up_on_their_owners_socket(cgroup: str, socket: str | None) -> None:
    assert podman_socket(parse_cgroups(cgroup), ROOTFUL, TEMPLATE) == socket


def test_the_rootless_template_keeps_escaped_percent_signs() -> None:
    cgroups = parse_cgroups(f"0::/user.slice/user-7.slice/libpod-{ID}.scope")
    assert podman_socket(cgroups, ROOTFUL, "unix:///r/100%%/%d.sock") == "unix:///r/100%/7.sock"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("unix:///run/podman.sock", "exactly one %d"),
        ("unix:///run/%d/%d.sock", "exactly one %d"),
        ("unix:///run/%s.sock", "only supports escaped %% or the %d"),
        ("unix:///run/%d%", "trailing %"),
        ("unix:///run/%%d.sock", "exactly one %d"),
    ],
)
def test_bad_rootless_templates_are_refused(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_socket_template(template)
