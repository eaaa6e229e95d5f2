#!/bin/sh
# racf-vm guest runner (see docs/ARCHITECTURE.md, "The job's context disk" and "Guest channels").
# Installed once per image by racf-vm's image preparation; runs as root at boot from
# /etc/rc.local or racf-runner.service. POSIX sh; works with busybox and with Debian.
# The job's context arrives on its own read-only disk (serial racf-context): a tar stream
# read with tar, never mounted. Everything in it is user data: it is only ever passed as
# separate arguments, never evaluated and never placed inside a script string.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022
J=/racf/job
PORTS=/sys/class/virtio-ports

halt() {
    sync
    poweroff -f
    exit 1
}

# status lines go to fd 9 (the status port, opened once); fd 9 is closed for every child
# that runs as the job user, so the job cannot forge status lines.
status() {
    printf '%s\n' "$*" >&9
}

fail() {
    status "error $*" 2>/dev/null || echo "racf-runner: error $*" >&2
    halt
}

# -- channels ------------------------------------------------------------------------------
find_ports() {
    P_STDOUT= P_STDERR= P_OUTPUT= P_STATUS=
    for d in "$PORTS"/*; do
        [ -r "$d/name" ] || continue
        dev=/dev/${d##*/}
        [ -c "$dev" ] || continue
        case $(cat "$d/name") in
            org.racf.vm.stdout) P_STDOUT=$dev ;;
            org.racf.vm.stderr) P_STDERR=$dev ;;
            org.racf.vm.output) P_OUTPUT=$dev ;;
            org.racf.vm.status) P_STATUS=$dev ;;
        esac
    done
    [ -n "$P_STDOUT" ] && [ -n "$P_STDERR" ] && [ -n "$P_OUTPUT" ] && [ -n "$P_STATUS" ]
}

[ -d "$PORTS" ] || modprobe virtio_console 2>/dev/null
n=0
until find_ports; do
    n=$((n + 1))
    if [ $n -gt 150 ]; then
        echo "racf-runner: virtio ports not found" >&2
        [ -n "$P_STATUS" ] && exec 9>"$P_STATUS" && status "error virtio ports not found"
        halt
    fi
    sleep 0.1 2>/dev/null || sleep 1
done
exec 9>"$P_STATUS" || { echo "racf-runner: cannot open status port" >&2; halt; }

# -- job description -----------------------------------------------------------------------
# The context disk: the virtio disk whose serial is racf-context (no udev: read /sys).
CTX=
for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = racf-context ] && CTX=/dev/${b##*/}
done
[ -n "$CTX" ] && [ -b "$CTX" ] || fail "no context disk"
rm -rf /racf/job && mkdir -m 0700 /racf/job || fail "cannot make /racf/job"
# the control archive at the start of the disk (written by the wrapper itself, as root)
tar -x -f "$CTX" -C /racf 2>/dev/null || fail "cannot read the context disk"

readline() { # readline FILE -> $v (file content without trailing newlines)
    [ -f "$J/$1" ] || fail "missing $1"
    v=$(cat "$J/$1") || fail "cannot read $1"
}
readline uid;     uid=$v
readline gid;     gid=$v
readline user;    user=$v
readline workdir; wd=$v

case $uid in ''|*[!0-9]*) fail "bad uid" ;; esac
case $gid in ''|*[!0-9]*) fail "bad gid" ;; esac
[ ${#uid} -le 9 ] && [ ${#gid} -le 9 ] || fail "uid/gid out of range"
uid=$((uid + 0)); gid=$((gid + 0))
[ "$uid" -ne 0 ] || fail "refusing uid 0"
[ "$gid" -ne 0 ] || fail "refusing gid 0"
case $user in ''|-*|*[!A-Za-z0-9._-]*) fail "bad user name" ;; esac
[ ${#user} -le 32 ] || fail "bad user name"
case $wd in
    /*) ;;
    *) fail "workdir not absolute" ;;
esac
case $wd in
    / | *[!A-Za-z0-9._/+@%,=-]* | */../* | */.. | */./* | */. | *//*) fail "bad workdir" ;;
esac

# -- account ---------------------------------------------------------------------------------
# an existing user with that uid is used as is; otherwise the name must be free
name=$(awk -F: -v u="$uid" '$3 == u { print $1; exit }' /etc/passwd) || fail "cannot read /etc/passwd"
if [ -n "$name" ]; then
    user=$name
else
    if awk -F: -v n="$user" '$1 == n { f = 1 } END { exit !f }' /etc/passwd; then
        fail "user name $user taken by another uid"
    fi
    if ! awk -F: -v g="$gid" '$3 == g { f = 1 } END { exit !f }' /etc/group; then
        gname=$user
        if awk -F: -v n="$gname" '$1 == n { f = 1 } END { exit !f }' /etc/group; then
            gname=racf$gid
        fi
        printf '%s:x:%s:\n' "$gname" "$gid" >>/etc/group || fail "cannot write /etc/group"
    fi
    printf '%s:x:%s:%s::%s:/bin/sh\n' "$user" "$uid" "$gid" "$wd" >>/etc/passwd \
        || fail "cannot write /etc/passwd"
fi
[ "$(awk -F: -v n="$user" '$1 == n { print $3; exit }' /etc/passwd)" = "$uid" ] \
    || fail "user $user does not map to uid $uid"

if setpriv --help 2>&1 | grep -q -e --reuid; then
    as_user() { setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"; }
else
    # the script string is fixed; the command travels as positional parameters
    # (options before "--": busybox su permutes options and would parse the job's argv)
    as_user() { su -s /bin/sh -c 'exec "$@"' -- "$user" sh "$@"; }
fi

# -- working directory ----------------------------------------------------------------------
[ -e "$wd" ] || [ -L "$wd" ] && fail "workdir already exists in the image"
mkdir -p "$wd" || fail "cannot create workdir"
chown "$uid:$gid" "$wd" && chmod 0700 "$wd" || fail "cannot set up workdir"

readline input_offset; off=$v
case $off in ''|*[!0-9]*) fail "bad input offset" ;; esac
off=$(expr "$off" + 0) || off=0
if [ "$off" -gt 0 ]; then
    [ $((off % 4096)) -eq 0 ] || fail "bad input offset"
    # root reads the disk; tar runs as the user and reads the input archive from a pipe
    dd if="$CTX" bs=4096 skip=$((off / 4096)) 2>/dev/null 9>&- \
        | (cd "$wd" && as_user tar -xf -) >/dev/null 2>&1 9>&- \
        || fail "cannot extract the input files"
fi

# -- command line and environment -----------------------------------------------------------
# positional parameters become: env -i -- NAME=value... ARGV...
# (a command name containing "=" would be taken by env for an assignment: such a command
# goes through a fixed /bin/sh -c 'exec "$@"' instead, which adds PWD to its environment)
set -- env -i --
for f in "$J"/env/*; do
    [ -f "$f" ] || continue
    v=$(cat "$f"; printf x) || fail "cannot read env"
    v=${v%x}
    name=${v%%=*}
    [ "$name" != "$v" ] || fail "bad env entry"
    case $name in ''|[0-9]*|*[!A-Za-z0-9_]*) fail "bad env name" ;; esac
    set -- "$@" "$v"
done
nargs=0
for f in "$J"/argv/*; do
    [ -f "$f" ] || continue
    v=$(cat "$f"; printf x) || fail "cannot read argv"
    v=${v%x}
    if [ $nargs -eq 0 ]; then
        case $v in
            '') fail "empty command" ;;
            *=*) set -- "$@" /bin/sh -c 'exec "$@"' sh ;;
        esac
    fi
    set -- "$@" "$v"
    nargs=$((nargs + 1))
done
[ $nargs -gt 0 ] || fail "no command"

# -- run ----------------------------------------------------------------------------------------
status started
(cd "$wd" && as_user "$@") </dev/null >"$P_STDOUT" 2>"$P_STDERR" 9>&-
rc=$?
[ $rc -le 255 ] || rc=255

# nothing of the job may outlive it (kill -1 from the user's own shell spares only that shell)
as_user /bin/sh -c 'kill -9 -1' </dev/null >/dev/null 2>&1 9>&-
as_user /bin/sh -c 'kill -9 -1' </dev/null >/dev/null 2>&1 9>&-

(cd / && as_user tar -C "$wd" -cf - .) </dev/null >"$P_OUTPUT" 2>/dev/null 9>&-
status "exit $rc"
exec 9>&-
halt
