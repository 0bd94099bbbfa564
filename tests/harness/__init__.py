"""The one test harness: what more than one test module needs, each concern once.

Imported as ``tests.harness``: tests/conftest.py puts the checkout first on the import
path (inside a test guest, the copy of tests/ is run the same way).

- ``paths``: the checkout, golden/, patches/, the helper's hook.py, the reference configs;
- ``skips``: skip here, fail in CI (OCI_SYSTEMD_NO_SKIP=1): root, tools;
- ``runner``: oci-systemd and oci-systemd-copyup, in this process or as a real one, and
  the one-line error assertion;
- ``planning``: runc's default config, options and a plan, for tests of the pure core;
- ``shell``: main() in this process with fd capture, and bundles of other golden configs;
- ``profiles``: the hypothesis profiles (dev, ci, fuzz);
- ``trees``: one record of a directory tree (snapshot, manifest) and its differences;
- ``bundles``: a small systemd bundle; the e2e images and the bundles made from them;
- ``copyup``: the copy-up suite's fidelity tree, OCI states and busybox bundles;
- ``mounts``: tmpfs mounts of our own, and processes holding a container's mounts;
- ``userns``: id maps and ownership-shifted trees;
- ``runc_harness``, ``runc_monitor``: real runc containers (the one container class);
- ``notify``: a host-side sd_notify listener, and a container that runc starts with
  NOTIFY_SOCKET (readiness, and when SIGRTMIN+3 may be sent);
- ``rootfs_cache``: debootstrapped Debian trees, cached as tarballs;
- ``clean_boot``: the clean-boot rule (journal lines at err or worse, each explained)
  and who causes the warnings;
- ``checks``, ``host_state``, ``parallel``, ``figures``: the e2e suite's checks, host
  snapshots, cell pools and boot figures (the test guests use them too);
- ``integrations``: podman, the Debian tree and a policy for the integration tests;
- ``load``: N systemd containers at once (the load test and ``make bench``);
- ``nspawn``: systemd-nspawn, the benchmarks' reference peer, in a cgroup of its own.
"""
