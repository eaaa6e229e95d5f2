"""The site configuration, ``/etc/racf-vm/racf-vm.toml``.

Every setting has a safe default, so an empty file is a valid configuration. Unknown
keys are errors (a misspelt limit must not silently fall back to its default), each value
is type- and range-checked, and every message names the file and, when it can be found,
the line. File trust (owner, mode, every path component) is the caller's job: this module
only turns trusted bytes into frozen values.
"""

from racf_vm.config.integration import CondorConfig, Profile  # noqa: F401
from racf_vm.config.model import (  # noqa: F401
    LOG_LEVELS,
    Config,
    GuestfsConfig,
    ImagesConfig,
    LibvirtConfig,
    LimitsConfig,
    NetworkConfig,
    ParentConfig,
    PathsConfig,
    SizingConfig,
    TimeoutsConfig,
    UntrustedNetworkConfig,
    VmUniverseConfig,
)
from racf_vm.config.parse import load_config, parse_config  # noqa: F401
