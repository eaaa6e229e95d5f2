"""racf_vm.condor.credentials: what an untrusted guest must not receive."""

from racf_vm.condor.credentials import strip_credentials, withheld_paths
from racf_vm.images.catalog import parse_image_entry

W = "/var/lib/condor/execute/dir_7"


def test_credential_variables_are_stripped():
    env = (("PATH", "/bin"), ("X509_USER_PROXY", f"{W}/x509up_u1"), ("BEARER_TOKEN", "secret"),
           ("KRB5CCNAME", "FILE:/tmp/krb5cc_1"), ("_CONDOR_CREDS", f"{W}/.condor_creds"), ("HOME", "/h"))
    assert strip_credentials(env) == (("PATH", "/bin"), ("HOME", "/h"))


def test_credential_files_in_the_sandbox_are_withheld():
    env = {"X509_USER_PROXY": f"{W}/proxy/x509.pem", "_CONDOR_CREDS": f"{W}/.condor_creds",
           "BEARER_TOKEN_FILE": "/elsewhere/token", "KRB5CCNAME": f"FILE:{W}/cc",
           "SCITOKENS_FILE": f"{W}/../dir_8/tok"}
    names = ["data.txt", ".condor_creds", "krb5cc_2501", "x509up_u2501", "krb5cc"]
    assert withheld_paths(env, W, names) == (".condor_creds", "cc", "krb5cc_2501", "proxy/x509.pem",
                                             "x509up_u2501")


def test_catalog_default_follows_trust():
    base = ('name = "n"\ntrust = "{t}"\npath = "/i/n.qcow2"\nformat = "qcow2"\nsha256 = "' + "a" * 64 +
            '"\n{extra}\n[boot]\nmethod = "bootloader"\n[context]\nfilesystem = "/dev/sda"\n')
    entry = lambda t, extra="": parse_image_entry(base.format(t=t, extra=extra).encode(), "/c/n.toml")  # noqa: E731
    assert entry("trusted").credentials and not entry("untrusted").credentials
    assert entry("untrusted", "credentials = true").credentials
    assert not entry("trusted", "credentials = false").credentials
