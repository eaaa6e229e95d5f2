# racf-vm: see README.md. Every target that needs something installs it (make deps).
SHELL := /bin/bash
PREFIX ?= /usr/local
DESTDIR ?=
VENV ?= /opt/racf-vm/venv
SYSCONFDIR ?= /etc/racf-vm
STATEDIR ?= /var/lib/racf-vm
SHIM_PATH ?= /usr/local/racf/vm
PREP_USER ?= racf-prep
UNITDIR ?= /etc/systemd/system
# The HTCondor integrations (racf_vm/condor/integration_paths.py; [condor] libexec_dir)
LIBEXECDIR ?= $(PREFIX)/libexec/racf-vm
INTEGRATION_TOOLS := racf-vm-advertise racf-vm-libvirt-xml racf-vm-hook-prepare racf-vm-hook-exit \
	racf-vm-transfer racf-vm-route-translate racf-vm-route-finalize
PY := $(VENV)/bin/python

# The test copy of the shim and the starter stand-in (root-owned, outside the repo).
TEST_LIBEXEC ?= /usr/local/libexec/racf-vm-test
TEST_CONFIG ?= /etc/racf-vm-test/racf-vm.toml

DEBIAN_PACKAGES := libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients \
	python3-libvirt qemu-system-x86 qemu-utils libguestfs-tools python3-guestfs \
	linux-image-amd64 busybox-static mmdebstrap e2fsprogs python3-venv python3-psutil \
	iptables nftables python3-nftables python3-iptables conntrack dnsmasq-base \
	gcc libc6-dev make iproute2 curl zstd xz-utils passwd cpio python3-cryptography
# Only the tests need these: nfs-ganesha(-vfs) is the site network tests' NFS server
# (userspace, in a test namespace; the kernel here may have no NFS server). Its own service,
# which Debian enables on install, is disabled again: the tests start their own.
TEST_DEBIAN_PACKAGES := nfs-ganesha nfs-ganesha-vfs

# $(call apt_install,PACKAGES): apt-get only for the ones not installed yet.
apt_install = missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

.PHONY: all deps test-deps build install uninstall test-setup test unit demo bench fuzz clean

all: build

# Idempotent: apt-get only when a package is missing; pip only when requirements changed.
deps:
	@$(call apt_install,$(DEBIAN_PACKAGES))
	@if [ ! -x $(PY) ]; then /usr/bin/python3 -m venv --system-site-packages $(VENV); fi
	@stamp=$(VENV)/.racf-deps-$$(sha256sum requirements-dev.txt | cut -c1-16); \
	if [ ! -e $$stamp ]; then \
		$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt && touch $$stamp; \
	fi
	@$(PY) -c 'import libvirt, guestfs, psutil, classad2, click, cryptography' && echo "deps: ok"

test-deps: deps
	@$(call apt_install,$(TEST_DEBIAN_PACKAGES)); \
	if [ -n "$$missing" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now nfs-ganesha.service 2>/dev/null || true; \
	fi

build:
	$(MAKE) -C wrapper SHIM_OUT=racf-vm-shim
	$(MAKE) -C tests/starter

install: build
	install -d -m 0755 $(DESTDIR)$(dir $(SHIM_PATH)) $(DESTDIR)$(PREFIX)/sbin \
		$(DESTDIR)$(PREFIX)/share/racf-vm/guest $(DESTDIR)$(PREFIX)/share/racf-vm/examples
	install -o root -g root -m 4755 wrapper/racf-vm-shim $(DESTDIR)$(SHIM_PATH)
	install -o root -g root -m 0644 images.d/guest/runner.sh $(DESTDIR)$(PREFIX)/share/racf-vm/guest/runner.sh
	install -o root -g root -m 0644 images.d/*.toml $(DESTDIR)$(PREFIX)/share/racf-vm/examples/
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
		$(if $(DESTDIR),--root $(DESTDIR)) .
	rm -rf build racf_vm.egg-info
	ln -sf $(VENV)/bin/racf-vm $(DESTDIR)$(PREFIX)/sbin/racf-vm
	@# the HTCondor integrations, as racf-vm condor-config names them
	install -d -o root -g root -m 0755 $(DESTDIR)$(LIBEXECDIR)
	ln -sf $(VENV)/bin/racf-vm-advertise $(DESTDIR)$(LIBEXECDIR)/racf-vm-advertise
	ln -sf $(VENV)/bin/racf-vm-libvirt-xml $(DESTDIR)$(LIBEXECDIR)/racf-vm-libvirt-xml
	ln -sf $(VENV)/bin/racf-vm-hook-prepare $(DESTDIR)$(LIBEXECDIR)/racf-vm-hook-prepare
	ln -sf $(VENV)/bin/racf-vm-hook-exit $(DESTDIR)$(LIBEXECDIR)/racf-vm-hook-exit
	ln -sf $(VENV)/bin/racf-vm-transfer $(DESTDIR)$(LIBEXECDIR)/racf-vm-transfer
	ln -sf $(VENV)/bin/racf-vm-route-translate $(DESTDIR)$(LIBEXECDIR)/racf-vm-route-translate
	ln -sf $(VENV)/bin/racf-vm-route-finalize $(DESTDIR)$(LIBEXECDIR)/racf-vm-route-finalize
	install -d -o root -g root -m 0755 $(DESTDIR)$(SYSCONFDIR) $(DESTDIR)$(SYSCONFDIR)/images.d
	test -e $(DESTDIR)$(SYSCONFDIR)/racf-vm.toml || \
		install -o root -g root -m 0644 etc/racf-vm.toml $(DESTDIR)$(SYSCONFDIR)/racf-vm.toml
	install -d -o root -g root -m 0711 $(DESTDIR)$(STATEDIR) $(DESTDIR)$(STATEDIR)/jobs
	install -d -o root -g root -m 0755 $(DESTDIR)$(STATEDIR)/images $(DESTDIR)$(STATEDIR)/prepared
	@# racf-vm gc without a person: a systemd timer where systemd runs, else cron
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/cron.d
	for u in racf-vm-gc.service racf-vm-gc.timer; do \
		sed 's|@SBIN@|$(PREFIX)/sbin|' etc/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u; \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; \
	done
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload && systemctl enable --now racf-vm-gc.timer; \
		rm -f /etc/cron.d/racf-vm-gc; \
	else \
		sed 's|@SBIN@|$(PREFIX)/sbin|' etc/cron.d-racf-vm-gc > $(DESTDIR)/etc/cron.d/racf-vm-gc; \
		chmod 0644 $(DESTDIR)/etc/cron.d/racf-vm-gc; \
	fi
	@# the unprivileged account that prepares images with libguestfs ([guestfs] user)
	@if [ -z "$(DESTDIR)" ] && ! getent passwd $(PREP_USER) >/dev/null; then \
		/usr/sbin/useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --comment "racf-vm image preparation" $(PREP_USER); \
	fi

uninstall:
	-@[ -d /run/systemd/system ] && systemctl disable --now racf-vm-gc.timer 2>/dev/null || true
	rm -f $(DESTDIR)$(UNITDIR)/racf-vm-gc.service $(DESTDIR)$(UNITDIR)/racf-vm-gc.timer \
		$(DESTDIR)/etc/cron.d/racf-vm-gc
	rm -f $(DESTDIR)$(SHIM_PATH) $(DESTDIR)$(PREFIX)/sbin/racf-vm
	rm -f $(addprefix $(DESTDIR)$(LIBEXECDIR)/,$(INTEGRATION_TOOLS))
	-rmdir $(DESTDIR)$(LIBEXECDIR)
	rm -rf $(DESTDIR)$(PREFIX)/share/racf-vm
	-$(PY) -m pip uninstall -y -q racf-vm

# A second shim compiled against the test config, and the starter stand-in.
test-setup: install
	$(MAKE) -C wrapper SHIM_OUT=racf-vm-shim-test RACF_CONFIG=$(TEST_CONFIG) RACF_PYTHON=$(PY)
	install -d -o root -g root -m 0755 $(TEST_LIBEXEC) $(dir $(TEST_CONFIG))
	install -o root -g root -m 4755 wrapper/racf-vm-shim-test $(TEST_LIBEXEC)/vm
	install -o root -g root -m 0755 tests/starter/condor_starter $(TEST_LIBEXEC)/condor_starter

# Ends with the slowest tests (suite time stays visible) and the skip summary; a skip for
# a reason outside tests/support/prereq.py MACHINE_SKIPS fails the run.
test: test-deps test-setup
	$(PY) -m pytest -p no:cacheprovider --durations=25 tests

unit: deps
	$(PY) -m pytest -p no:cacheprovider tests/unit

demo: deps test-setup
	$(PY) -m tests.demo

bench: deps test-setup
	$(PY) -m tests.bench
	@if [ -f tests/bench_images.py ]; then $(PY) -m tests.bench_images; fi

fuzz: deps
	FUZZ_EXAMPLES=20000 $(PY) -m pytest -p no:cacheprovider tests/fuzz

clean:
	$(MAKE) -C wrapper clean
	$(MAKE) -C tests/starter clean
	rm -rf build racf_vm.egg-info
