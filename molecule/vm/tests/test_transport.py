"""The VM is reached over SSH like a user's server (the shared tests of
molecule/resources/transport_tests.py)."""

from transport_tests import (  # noqa: F401  (collected by pytest)
    test_a_host_with_another_key_is_refused,
    test_ansible_logs_in_as_an_unprivileged_user_and_becomes_root,
    test_an_unknown_host_is_refused,
    test_molecule_uses_the_project_ssh_settings,
    test_root_cannot_log_in,
)
