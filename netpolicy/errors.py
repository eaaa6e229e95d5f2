"""netpolicy's errors: racf-vm errors, so the wrapper reports them with sysexits."""

from racf_vm.core.errors import ConfigError, TemporaryError


class NetpolicyError(TemporaryError):
    """The firewall or the untrusted network could not be set up (the job is retried)."""


class PoolExhausted(NetpolicyError):
    """Every address of the untrusted network is reserved."""


class BackendMismatch(ConfigError):
    """The configured or available firewall backend does not match the host's iptables."""
