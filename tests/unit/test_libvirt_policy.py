from racf_vm.trust.qemuconf import qemu_conf_problems


def test_default_debian_qemu_conf_is_fine():
    assert qemu_conf_problems('#user = "root"\n#dynamic_ownership = 1\n') == []


def test_root_user_and_no_dynamic_ownership_are_refused():
    problems = qemu_conf_problems('user = "root"\ngroup="root"\ndynamic_ownership = 0\n')
    assert len(problems) == 3
    assert "root" in problems[0]
