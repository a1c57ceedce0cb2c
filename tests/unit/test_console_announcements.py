"""Reading guest announcements (failures, host key) off a console still being written."""

from __future__ import annotations

from harness.targets.boot import REFERENCE_READINESS

announced_host_key = REFERENCE_READINESS.announced_host_key
provisioning_failure = REFERENCE_READINESS.provisioning_failure

LINE = ("SYSEXT-HARNESS-IGNITION-FAILED: stage files: CRITICAL : files: createFilesystemsFiles:"
        " createFiles: op(1): [failed]   writing file \"/sysroot/etc/extensions/tampered.raw\":"
        " hash verification failed")


def test_a_finished_line_gives_tool_and_reason() -> None:
    console = f"[  OK  ] Started foo.\r\n\x1b[!p\x1b]104\x07{LINE}\r\nmore\r\n"
    tool, reason = provisioning_failure(console) or ("", "")
    assert tool == "Ignition"
    assert reason.endswith("hash verification failed")


def test_a_line_still_being_written_does_not_count_yet() -> None:
    # Seen in CI: the console was polled mid-line and the reason was cut to "stage files:".
    assert provisioning_failure(f"boot\r\n{LINE[:60]}") is None
    assert provisioning_failure(f"boot\r\n{LINE}") is None


def test_cloud_config_failures_and_plain_newlines() -> None:
    console = "SYSEXT-HARNESS-CLOUD-CONFIG-FAILED: boot: step 2: exit 1\n"
    assert provisioning_failure(console) == ("cloud-config", "boot: step 2: exit 1")


def test_no_failure_line() -> None:
    assert provisioning_failure("SYSEXT-HARNESS-IGNITION-APPLIED platform=qemu\r\n") is None


def test_host_key_only_once_complete() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOv1bQ+Xb0z3w2Ue9vV6zX9aY4nV0Q7fGzY7r0m8yq2K"
    line = f"SYSEXT-HARNESS-HOSTKEY {key} root@refos\r\n"
    assert announced_host_key(line[:50]) is None
    assert announced_host_key(line[:-12]) == key
    assert announced_host_key("old\r\n" + line.replace("K root", "J root") + line) == key
