"""The administrator's command line: ``racf-vm gc|doctor|policy|images|condor-config``.

One module per command group. One exit path: every RacfError becomes one line
``racf-vm: ...`` and its sysexits status; ``-v``/``--verbose`` add the detail.
"""

import sys

import click

from racf_vm import config as config_mod
from racf_vm.core import errors, logsetup
from racf_vm.core.errors import RacfError
from racf_vm.trust import pathtrust

DEFAULT_CONFIG = "/etc/racf-vm/racf-vm.toml"


class Ctx:
    """What every command gets: the config path, loaded (after its trust check) on first use."""

    def __init__(self, config_path: str, verbose: bool):
        self.config_path = config_path
        self.verbose = verbose
        self._config = None

    @property
    def config(self):
        if self._config is None:
            pathtrust.check_trusted_file(self.config_path)
            self._config = config_mod.load_config(self.config_path)
        return self._config


@click.group(no_args_is_help=False)
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True, help="Site configuration file.")
@click.option("-v", "--verbose", is_flag=True, help="Show details and debug logging.")
@click.pass_context
def cli(ctx, config_path, verbose):
    """Boot per-job virtual machines for HTCondor vanilla jobs (administration)."""
    logsetup.configure("racf-vm: %(message)s", "debug" if verbose else "info")
    ctx.obj = Ctx(config_path, verbose)


def _register_commands() -> None:
    from racf_vm.cli import imageadd, maintain  # noqa: F401  (add their commands to images)
    from racf_vm.cli.condor import condor_config_command
    from racf_vm.cli.doctor import doctor_command
    from racf_vm.cli.gc import gc_command
    from racf_vm.cli.images import images_group
    from racf_vm.cli.policy import policy_group

    for command in (gc_command, policy_group, doctor_command, images_group, condor_config_command):
        cli.add_command(command)


def main(argv=None) -> int:
    _register_commands()
    ctx = None
    try:
        ctx = cli.make_context("racf-vm", list(sys.argv[1:] if argv is None else argv))
        with ctx:
            cli.invoke(ctx)
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("racf-vm: aborted", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(f"racf-vm: {exc.format_message()}; see racf-vm --help", err=True)
        return errors.EX_USAGE
    except RacfError as exc:
        click.echo(f"racf-vm: {exc.message}", err=True)
        if exc.detail and ctx is not None and ctx.obj is not None and ctx.obj.verbose:
            click.echo(exc.detail, err=True)
        return exc.exit_status
    return 0
