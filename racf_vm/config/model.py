"""The site configuration as frozen values; every setting has a safe default."""

from dataclasses import dataclass, field

from racf_vm.config.integration import DEFAULT_PROFILES, CondorConfig, Profile

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class PathsConfig:
    """Where racf-vm finds its catalog and keeps its state (all root-owned)."""

    catalog_dir: str = "/etc/racf-vm/images.d"
    state_dir: str = "/var/lib/racf-vm"
    image_dir: str = "/var/lib/racf-vm/images"
    runner: str = "/usr/local/share/racf-vm/guest/runner.sh"  # injected into each guest


@dataclass(frozen=True)
class ParentConfig:
    """The only binary accepted as the wrapper's parent (compare with STARTER), and where it
    makes job sandboxes (EXECUTE): the wrapper trusts no other working directory."""

    starter: str = "/usr/sbin/condor_starter"
    execute: str = "/var/lib/condor/execute"


@dataclass(frozen=True)
class SizingConfig:
    """How a slot's CPUs and memory become a VM size (see racf_vm.sizing)."""

    memory_per_core_mib: int = 2048
    min_memory_mib: int = 256
    min_cpus: int = 1
    max_cpus: int = 0  # 0 = as many as the host has
    overhead_mib: int = 0  # kept free in the slot for QEMU itself


@dataclass(frozen=True)
class LimitsConfig:
    """Caps on what a job may hand us; all sizes in bytes."""

    min_uid: int = 1000
    max_job_ad_bytes: int = 1048576
    max_env_bytes: int = 1048576
    max_args: int = 4096
    max_arg_bytes: int = 131072
    max_input_bytes: int = 1073741824
    max_output_bytes: int = 1073741824
    max_stdout_bytes: int = 4294967296  # what the guest writes to the job's stdout
    max_stderr_bytes: int = 1073741824
    max_scratch_bytes: int = 107374182400  # --scratch SIZE
    max_data_bytes: int = 107374182400  # --data FILE (copied into the job directory)


@dataclass(frozen=True)
class TimeoutsConfig:
    """Seconds; every wait racf-vm does is bounded by one of these."""

    prepare: float = 900.0  # preparing an image once, or waiting for another's preparation
    sandbox: float = 600.0  # copying the job's input or output files (as the job's user)
    boot: float = 600.0  # until the guest reports `started`
    job: float = 604800.0
    shutdown_grace: float = 30.0
    poweroff: float = 60.0  # after `exit N` until the domain ends
    libvirt_connect: float = 30.0
    after_destroy: float = 30.0  # a destroyed VM must be gone within this (a loaded host is slow)
    drain: float = 0.1  # after the job's end: for bytes still queued on the channels
    end_poll: float = 0.05  # while waiting for the output archive to complete
    output_stall: float = 30.0  # a job stdout/stderr nobody reads, before the rest is dropped
    health: float = 2.0  # how often a running guest's domain and firewall are checked


@dataclass(frozen=True)
class LibvirtConfig:
    """How domains are defined and where QEMU runs."""

    uri: str = "qemu:///system"
    accel: str = "auto"  # auto | kvm | tcg
    qemu_user: str = "libvirt-qemu"
    qemu_group: str = "kvm"
    emulator: str = "/usr/bin/qemu-system-x86_64"
    machine: str = "pc"


@dataclass(frozen=True)
class NetworkConfig:
    """Networking of trusted images (untrusted ones always use netpolicy's network)."""

    trusted_bridge: str = ""  # empty: trusted images get no NIC
    # this node's MACs on the site network (racf_vm.vm.trustednet): each node its own
    trusted_mac_prefix: str = "02:72:74"
    # a site dnsmasq's --dhcp-hostsdir: one reservation file per job; empty: no reservations
    trusted_dhcp_hostsdir: str = ""
    trusted_pool: str = ""  # "FIRST-LAST": this node's fixed addresses (with the hostsdir)


# Destinations no untrusted guest reaches: the NAT is for the outside world. Private and
# shared ranges (RFC 1918, RFC 6598) are where site networks such as the NFS servers live;
# link-local holds cloud metadata services; loopback, "this network", multicast and the
# reserved block (with broadcast) are never a legitimate destination of a job.
DEFAULT_DENY = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)


@dataclass(frozen=True)
class UntrustedNetworkConfig:
    """The NAT network of untrusted images (netpolicy owns it and its firewall)."""

    name: str = "racf-untrusted"  # libvirt network
    bridge: str = "racfu0"
    subnet: str = "10.213.0.0/24"  # the host takes the first address
    backend: str = "auto"  # auto | nft | iptables (must match the host's iptables)
    deny: tuple = DEFAULT_DENY  # IPv4 networks guests never reach (after NAT too)
    fwmark: int = 0x00400000  # the packet-mark bit of guest packets our rules let leave


@dataclass(frozen=True)
class GuestfsConfig:
    """libguestfs settings for preparing images (racf_vm.images.prepare)."""

    user: str = "racf-prep"  # the unprivileged account libguestfs runs as (make install makes it)
    backend: str = "direct"
    memsize_mib: int = 512


@dataclass(frozen=True)
class ImagesConfig:
    """Where base images come from (seed 003) and how the node cache fetches them."""

    source_url: str = ""  # http(s) directory with the checksum list; empty: no remote
    cache_dir: str = PathsConfig.image_dir  # follows paths.image_dir unless set
    checksum_file: str = "SHA256SUMS"
    http_timeout: float = 30.0  # connecting, and each read
    retries: int = 3
    retry_delay: float = 2.0  # first backoff; doubled after each failure
    lock_timeout: float = 3600.0  # waiting for another process's download of an image
    download_timeout: float = 3600.0  # one download (or list) whole, retries included
    max_image_bytes: int = 64 * 1024**3  # decompressed size of one image (a bomb stops here)
    proxy: str = ""  # http(s) proxy URL (e.g. Squid); empty: direct
    # Ed25519 public keys (OpenSSH lines) whose signature on the checksum list a node
    # accepts; empty: unsigned lists are accepted and no catalog entry may follow the server
    trusted_keys: tuple[str, ...] = ()
    signing_key: str = ""  # private key `images publish|maintain` sign with (on the publisher)
    max_list_age: int = 0  # seconds; a signed list older than this is refused; 0: no limit


@dataclass(frozen=True)
class VmUniverseConfig:
    """The VM universe's LIBVIRT_XML_SCRIPT (racf-vm-libvirt-xml)."""

    # each guest's serial console into its job directory (<state_dir>/jobs/<tag>/console.log,
    # removed with it); false: a console nobody reads
    console_log: bool = False


@dataclass(frozen=True)
class Config:
    """The whole site configuration."""

    log_level: str = "warning"  # debug | info | warning | error | critical
    paths: PathsConfig = field(default_factory=PathsConfig)
    parent: ParentConfig = field(default_factory=ParentConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    libvirt: LibvirtConfig = field(default_factory=LibvirtConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    untrusted_network: UntrustedNetworkConfig = field(default_factory=UntrustedNetworkConfig)
    guestfs: GuestfsConfig = field(default_factory=GuestfsConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    condor: CondorConfig = field(default_factory=CondorConfig)
    profiles: tuple[Profile, ...] = DEFAULT_PROFILES  # instance profiles (racf_vm.config.integration)
    vm_universe: VmUniverseConfig = field(default_factory=VmUniverseConfig)
