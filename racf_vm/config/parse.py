"""Turn the bytes of ``/etc/racf-vm/racf-vm.toml`` into a ``Config``, or refuse them."""

import ipaddress

from racf_vm.config.integration import (
    check_profiles_fit_sizing,
    parse_condor,
    parse_profiles,
)
from racf_vm.config.model import (
    LOG_LEVELS,
    Config,
    GuestfsConfig,
    ImagesConfig,
    LibvirtConfig,
    LimitsConfig,
    ParentConfig,
    PathsConfig,
    SizingConfig,
    TimeoutsConfig,
    UntrustedNetworkConfig,
    VmUniverseConfig,
)
from racf_vm.config.network import IFACE_RE, check_networks_apart, parse_network
from racf_vm.config.sshkeys import parse_public_key
from racf_vm.core.errors import ConfigError
from racf_vm.core.files import read_capped
from racf_vm.core.tomlreader import TableReader, decode_toml

MAX_CONFIG_BYTES = 4 * 1024 * 1024
_USER_RE = r"[a-z_][a-z0-9_-]{0,31}"


def _paths(r: TableReader) -> PathsConfig:
    d = PathsConfig()
    return PathsConfig(
        catalog_dir=r.path("catalog_dir", d.catalog_dir),
        state_dir=r.path("state_dir", d.state_dir),
        image_dir=r.path("image_dir", d.image_dir),
        runner=r.path("runner", d.runner),
    )


def _parent(r: TableReader) -> ParentConfig:
    d = ParentConfig()
    return ParentConfig(starter=r.path("starter", d.starter), execute=r.path("execute", d.execute))


def _sizing(r: TableReader) -> SizingConfig:
    d = SizingConfig()
    s = SizingConfig(
        memory_per_core_mib=r.integer("memory_per_core_mib", d.memory_per_core_mib, minimum=1,
                                      maximum=2**30),
        min_memory_mib=r.integer("min_memory_mib", d.min_memory_mib, minimum=1, maximum=2**30),
        min_cpus=r.integer("min_cpus", d.min_cpus, minimum=1, maximum=4096),
        max_cpus=r.integer("max_cpus", d.max_cpus, minimum=0, maximum=4096),
        overhead_mib=r.integer("overhead_mib", d.overhead_mib, minimum=0, maximum=2**30),
    )
    if s.max_cpus and s.max_cpus < s.min_cpus:
        raise r.fail("max_cpus", f"{s.max_cpus} is below min_cpus ({s.min_cpus})")
    if s.memory_per_core_mib * s.min_cpus < s.min_memory_mib:
        # Otherwise every job would be refused as "slot too small" whatever its slot.
        raise r.fail("memory_per_core_mib",
                     f"{s.memory_per_core_mib} x min_cpus {s.min_cpus} is below "
                     f"min_memory_mib ({s.min_memory_mib})")
    return s


def _limits(r: TableReader) -> LimitsConfig:
    d = LimitsConfig()
    big = 2**40
    return LimitsConfig(
        min_uid=r.integer("min_uid", d.min_uid, minimum=1, maximum=2**32 - 2),
        max_job_ad_bytes=r.integer("max_job_ad_bytes", d.max_job_ad_bytes, minimum=1,
                                   maximum=2**30),
        max_env_bytes=r.integer("max_env_bytes", d.max_env_bytes, minimum=1, maximum=2**30),
        max_args=r.integer("max_args", d.max_args, minimum=1, maximum=2**20),
        max_arg_bytes=r.integer("max_arg_bytes", d.max_arg_bytes, minimum=1, maximum=2**30),
        max_input_bytes=r.integer("max_input_bytes", d.max_input_bytes, minimum=1,
                                  maximum=big),
        max_output_bytes=r.integer("max_output_bytes", d.max_output_bytes, minimum=1,
                                   maximum=big),
        max_stdout_bytes=r.integer("max_stdout_bytes", d.max_stdout_bytes, minimum=1, maximum=big),
        max_stderr_bytes=r.integer("max_stderr_bytes", d.max_stderr_bytes, minimum=1, maximum=big),
        max_scratch_bytes=r.integer("max_scratch_bytes", d.max_scratch_bytes, minimum=1 << 20, maximum=big),
        max_data_bytes=r.integer("max_data_bytes", d.max_data_bytes, minimum=1 << 20, maximum=big),
    )


def _timeouts(r: TableReader) -> TimeoutsConfig:
    d = TimeoutsConfig()
    if r.has("contextualize"):
        raise r.fail("contextualize", "no longer used: jobs are not contextualized with libguestfs "
                                      "any more; set prepare (image preparation) and sandbox "
                                      "(input/output files) instead")
    return TimeoutsConfig(
        prepare=r.seconds("prepare", d.prepare),
        sandbox=r.seconds("sandbox", d.sandbox),
        boot=r.seconds("boot", d.boot),
        job=r.seconds("job", d.job),
        shutdown_grace=r.seconds("shutdown_grace", d.shutdown_grace),
        poweroff=r.seconds("poweroff", d.poweroff),
        libvirt_connect=r.seconds("libvirt_connect", d.libvirt_connect),
        after_destroy=r.seconds("after_destroy", d.after_destroy),
        drain=r.seconds("drain", d.drain),
        end_poll=r.seconds("end_poll", d.end_poll),
        output_stall=r.seconds("output_stall", d.output_stall),
        health=r.seconds("health", d.health),
    )


def _libvirt(r: TableReader) -> LibvirtConfig:
    d = LibvirtConfig()
    return LibvirtConfig(
        uri=r.string("uri", d.uri, pattern=r"[a-z0-9+]+://[^\s]*", allow_empty=False),
        accel=r.choice("accel", d.accel, ("auto", "kvm", "tcg")),
        qemu_user=r.string("qemu_user", d.qemu_user, pattern=_USER_RE, allow_empty=False),
        qemu_group=r.string("qemu_group", d.qemu_group, pattern=_USER_RE, allow_empty=False),
        emulator=r.path("emulator", d.emulator),
        machine=r.string("machine", d.machine, pattern=r"[A-Za-z0-9_.-]{1,64}",
                         allow_empty=False),
    )


MAX_DENY = 256


def _deny(r: TableReader, default: tuple) -> tuple:
    value = r.raw("deny", list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise r.fail("deny", "must be a list of IPv4 networks (strings such as \"10.0.0.0/8\")")
    if len(value) > MAX_DENY:
        raise r.fail("deny", f"more than {MAX_DENY} entries")
    out = []
    for v in value:
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError as e:
            raise r.fail("deny", f"{v!r} is not a network: {e}") from None
        if net.version != 4:
            raise r.fail("deny", f"{v}: IPv6 is always closed to untrusted guests; list IPv4 networks only")
        if str(net) in out:
            raise r.fail("deny", f"{v} is listed twice")
        out.append(str(net))
    return tuple(out)


def _untrusted_network(r: TableReader) -> UntrustedNetworkConfig:
    d = UntrustedNetworkConfig()
    u = UntrustedNetworkConfig(
        name=r.string("name", d.name, pattern=r"[A-Za-z0-9_.-]{1,64}", allow_empty=False),
        bridge=r.string("bridge", d.bridge, pattern=IFACE_RE, allow_empty=False),
        subnet=r.string("subnet", d.subnet, pattern=r"[0-9./]{9,18}", allow_empty=False),
        backend=r.choice("backend", d.backend, ("auto", "nft", "iptables")),
        deny=_deny(r, d.deny),
        fwmark=r.integer("fwmark", d.fwmark, minimum=1, maximum=2**31),
    )
    if u.fwmark & (u.fwmark - 1):
        raise r.fail("fwmark", f"{u.fwmark:#x} is not a single bit (one bit of the packet mark, "
                               "such as 0x400000, that nothing else on this host sets)")
    try:
        net = ipaddress.IPv4Network(u.subnet, strict=True)
    except ValueError as e:
        raise r.fail("subnet", f"{u.subnet!r} is not an IPv4 network: {e}") from None
    if not 16 <= net.prefixlen <= 29 or not net.is_private:
        raise r.fail("subnet", f"{u.subnet} must be a private network between /16 and /29")
    return u


def _guestfs(r: TableReader) -> GuestfsConfig:
    d = GuestfsConfig()
    return GuestfsConfig(
        user=r.string("user", d.user, pattern=_USER_RE, allow_empty=False),
        backend=r.choice("backend", d.backend, ("direct",)),
        memsize_mib=r.integer("memsize_mib", d.memsize_mib, minimum=128, maximum=2**20),
    )


def _vm_universe(r: TableReader) -> VmUniverseConfig:
    return VmUniverseConfig(console_log=r.boolean("console_log", VmUniverseConfig.console_log))


_URL_RE = r"https?://[^\s/?#]+(/[^\s?#]*)?"


def _images(r: TableReader, image_dir: str) -> ImagesConfig:
    d = ImagesConfig()
    cache_dir = r.path("cache_dir", image_dir) if r.has("cache_dir") else image_dir
    return ImagesConfig(
        source_url=r.string("source_url", d.source_url, pattern=_URL_RE),
        cache_dir=cache_dir,
        checksum_file=r.string("checksum_file", d.checksum_file,
                               pattern=r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}", allow_empty=False),
        http_timeout=r.seconds("http_timeout", d.http_timeout),
        retries=r.integer("retries", d.retries, minimum=0, maximum=20),
        retry_delay=r.seconds("retry_delay", d.retry_delay),
        lock_timeout=r.seconds("lock_timeout", d.lock_timeout),
        download_timeout=r.seconds("download_timeout", d.download_timeout),
        max_image_bytes=r.integer("max_image_bytes", d.max_image_bytes, minimum=1 << 20,
                                  maximum=1 << 50),
        proxy=r.string("proxy", d.proxy, pattern=r"https?://[^\s/?#]+/?"),
        trusted_keys=_trusted_keys(r),
        signing_key=r.path("signing_key", "/") if r.has("signing_key") else d.signing_key,
        max_list_age=r.integer("max_list_age", d.max_list_age, minimum=0, maximum=10 * 365 * 86400),
    )


def _trusted_keys(r: TableReader) -> tuple[str, ...]:
    """The keys as given, each checked to be an Ed25519 key, none twice."""
    lines = r.strings("trusted_keys", ImagesConfig.trusted_keys, max_items=8)
    seen = set()
    for line in lines:
        try:
            key = parse_public_key(line)
        except ValueError as e:
            raise r.fail("trusted_keys", f"{line[:40]!r}...: {e}") from None
        if key.fingerprint in seen:
            raise r.fail("trusted_keys", f"key {key.fingerprint} is listed twice")
        seen.add(key.fingerprint)
    return lines


_SECTIONS = {
    "paths": _paths,
    "parent": _parent,
    "sizing": _sizing,
    "limits": _limits,
    "timeouts": _timeouts,
    "libvirt": _libvirt,
    "network": parse_network,
    "untrusted_network": _untrusted_network,
    "guestfs": _guestfs,
    "condor": parse_condor,
    "vm_universe": _vm_universe,
}


def parse_config(data: bytes, source: str) -> Config:
    """Turn the bytes of a (trusted) config file into a Config, or raise ConfigError.

    ``source`` is the file name used in messages.
    """
    doc, text = decode_toml(data, source)
    top = TableReader(doc, source, text, None)
    parts: dict = {
        "log_level": top.choice("log_level", Config.log_level, LOG_LEVELS),
    }
    for name, build in _SECTIONS.items():
        table = top.raw(name, {})
        reader = TableReader(table, source, text, name)
        parts[name] = build(reader)
        reader.finish()
    # [images] is built last: its cache_dir defaults to the parsed paths.image_dir.
    reader = TableReader(top.raw("images", {}), source, text, "images")
    parts["images"] = _images(reader, parts["paths"].image_dir)
    reader.finish()
    parts["profiles"] = parse_profiles(top.raw("profiles", None), source, text)
    check_profiles_fit_sizing(parts["profiles"], parts["sizing"].min_cpus,
                              parts["sizing"].min_memory_mib, source)
    top.finish()
    check_networks_apart(parts["network"], parts["untrusted_network"], source)
    return Config(**parts)


def load_config(path: str) -> Config:
    """Read and parse ``path``. The caller has already checked that the file is trusted
    (pathtrust walks symlinks too, so a symlinked config is followed here)."""
    data = read_capped(path, MAX_CONFIG_BYTES, "the configuration", error=ConfigError,
                       follow_symlinks=True)
    return parse_config(data, path)
