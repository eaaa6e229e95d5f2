"""racf_vm.config: defaults, types, unknown keys with file and line."""

import pytest

from racf_vm.config import Config, load_config, parse_config
from racf_vm.core.errors import ConfigError


def test_empty_file_gives_defaults():
    cfg = parse_config(b"", "racf-vm.toml")
    assert cfg == Config()
    assert cfg.paths.catalog_dir == "/etc/racf-vm/images.d"
    assert cfg.sizing.memory_per_core_mib == 2048
    assert cfg.limits.max_job_ad_bytes == 1048576
    assert cfg.timeouts.job == 604800.0
    assert cfg.libvirt.accel == "auto"
    assert cfg.network.trusted_bridge == ""
    assert cfg.guestfs.memsize_mib == 512


def test_full_file():
    data = b"""
log_level = "debug"
[paths]
catalog_dir = "/etc/x/images.d/"
state_dir = "/var/lib/x"
[sizing]
memory_per_core_mib = 1024
max_cpus = 4
[timeouts]
boot = 30
poweroff = 2.5
[libvirt]
accel = "tcg"
[network]
trusted_bridge = "br0"
"""
    cfg = parse_config(data, "f.toml")
    assert cfg.log_level == "debug"
    assert cfg.paths.catalog_dir == "/etc/x/images.d"
    assert cfg.sizing.max_cpus == 4
    assert cfg.timeouts.boot == 30.0 and isinstance(cfg.timeouts.boot, float)
    assert cfg.timeouts.poweroff == 2.5
    assert cfg.libvirt.accel == "tcg"
    assert cfg.network.trusted_bridge == "br0"


def test_frozen():
    cfg = parse_config(b"", "f")
    with pytest.raises(Exception):
        cfg.sizing.min_cpus = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"[paths]\nstate_dir = \"/x\"\ncatlog_dir = \"/y\"\n", "f.toml:3: paths.catlog_dir: unknown key"),
        (b"\n\n[pathz]\n", "f.toml:3: pathz: unknown key"),
        (b"foo = 1\n", "f.toml:1: foo: unknown key"),
        (b"[sizing]\nmin_cpus = \"2\"\n", "f.toml:2: sizing.min_cpus: must be an integer"),
        (b"[sizing]\nmin_cpus = true\n", "must be an integer"),
        (b"[sizing]\nmin_cpus = 0\n", "outside"),
        (b"[paths]\nstate_dir = \"relative\"\n", "not an absolute path"),
        (b"[paths]\nstate_dir = \"/a/../b\"\n", "'..'"),
        (b"[timeouts]\nboot = 0\n", "positive"),
        (b"[timeouts]\nboot = -1\n", "positive"),
        (b"[timeouts]\nboot = nan\n", "positive"),
        (b"[timeouts]\nboot = inf\n", "positive"),
        (b"[timeouts]\nboot = \"10\"\n", "number of seconds"),
        (b"[libvirt]\naccel = \"xen\"\n", "not one of"),
        (b"[network]\ntrusted_bridge = \"br0; rm\"\n", "does not match"),
        (b"[sizing]\nmin_cpus = 4\nmax_cpus = 2\n", "below min_cpus"),
        (b"[sizing]\nmemory_per_core_mib = 100\nmin_memory_mib = 256\n", "below min_memory_mib"),
        (b"paths = 3\n", "must be a table"),
        (b"[paths.sub]\nx = 1\n", "paths.sub: unknown key"),
        (b"[paths\n", "invalid TOML"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"log_level = \"loud\"\n", "not one of"),
        (b"[guestfs]\nbackend = \"direct\\n\"\n", "control characters"),
    ],
)
def test_errors(data, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(data, "f.toml")
    assert needle in str(e.value)
    assert str(e.value).startswith("f.toml")
    assert e.value.exit_status == 78


def test_unknown_key_line_in_right_section():
    data = b"[limits]\nmax_args = 5\n[sizing]\nmax_args = 5\n"
    with pytest.raises(ConfigError) as e:
        parse_config(data, "f.toml")
    assert str(e.value).startswith("f.toml:4: sizing.max_args")


def test_load_config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[limits]\nmin_uid = 500\n")
    assert load_config(str(p)).limits.min_uid == 500
    with pytest.raises(ConfigError, match="missing.toml' does not exist"):
        load_config(str(tmp_path / "missing.toml"))
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (4 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than the limit"):  # refused, never cut short
        load_config(str(big))


def test_images_defaults_and_cache_dir_follows_image_dir():
    from racf_vm.config import ImagesConfig

    assert parse_config(b"", "f").images == ImagesConfig()
    assert ImagesConfig().cache_dir == "/var/lib/racf-vm/images"
    assert ImagesConfig().source_url == ""
    cfg = parse_config(b"[paths]\nimage_dir = \"/srv/images\"\n", "f")
    assert cfg.images.cache_dir == "/srv/images"
    cfg = parse_config(b"[paths]\nimage_dir = \"/srv/images\"\n[images]\n"
                       b"cache_dir = \"/cache/\"\nsource_url = \"http://img.example:8080/vm/\"\n"
                       b"retries = 0\nhttp_timeout = 5\nproxy = \"http://squid:3128\"\n"
                       b"download_timeout = 600\nmax_image_bytes = 10737418240\n", "f")
    assert cfg.images.cache_dir == "/cache"
    assert cfg.images.download_timeout == 600.0 and cfg.images.max_image_bytes == 10 << 30
    assert ImagesConfig().max_image_bytes == 64 << 30 and ImagesConfig().download_timeout == 3600
    assert cfg.images.source_url == "http://img.example:8080/vm/"
    assert cfg.images.retries == 0 and cfg.images.http_timeout == 5.0
    assert cfg.images.proxy == "http://squid:3128"


@pytest.mark.parametrize("data, needle", [
    (b"[images]\nsource_url = \"ftp://x/\"\n", "images.source_url"),
    (b"[images]\nsource_url = \"http://x/a b\"\n", "does not match"),
    (b"[images]\ncache_dir = \"rel\"\n", "not an absolute path"),
    (b"[images]\nretries = 99\n", "outside"),
    (b"[images]\nhttp_timeout = 0\n", "positive"),
    (b"[images]\ndownload_timeout = -1\n", "positive"),
    (b"[images]\nmax_image_bytes = 1000\n", "outside 1048576.."),
    (b"[images]\nmax_image_bytes = \"64G\"\n", "must be an integer"),
    (b"[images]\nchecksum_file = \"../x\"\n", "does not match"),
    (b"[images]\nsourceurl = \"http://x/\"\n", "images.sourceurl: unknown key"),
])
def test_images_errors(data, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(data, "f.toml")
    assert needle in str(e.value)
