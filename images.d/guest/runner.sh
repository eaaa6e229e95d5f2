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
ETC=/etc    # the image's account files (a variable only so tests/unit can run the account rules)

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

# a failure of this job's own (its user or working directory against this image): it would
# repeat on any node, so the host ends the job instead of requeueing it
fail_job() {
    fail "job $*"
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
# -- the job's identity, account, working directory and input (not in maintenance mode) ----
setup_job() {
readline uid;     uid=$v
readline gid;     gid=$v
readline user;    user=$v
readline workdir; wd=$v
readline workdir_root; root=$v

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
# the workdir is exactly $root/<one name>: root absolute and clean, the name one component
case $root in
    /*) ;;
    *) fail "workdir root not absolute" ;;
esac
case $root in
    / | */ | *[!A-Za-z0-9._/+@%,=-]* | */../* | */.. | */./* | */. | *//*) fail "bad workdir root" ;;
esac
case $wd in
    "$root"/*) ;;
    *) fail "workdir $wd is not in the workdir root $root" ;;
esac
case ${wd#"$root"/} in
    '' | . | .. | */*) fail "workdir $wd is not one directory below the workdir root $root" ;;
esac

# -- account ---------------------------------------------------------------------------------
# The job's uid and gid get nothing a fresh account would not have (SECURITY.md, "The guest
# runner"). Refused when, in the image:
# - an account has the job's uid under another name or another primary gid, or the uid has
#   two entries; the job's user name belongs to another uid;
# - another account has the job's gid as its primary group;
# - the job's gid is a group with a privileged name (PRIV_GROUPS), lists members other than
#   the job's user, or has two entries; the job's user is listed in any other group;
# - /etc/sudoers, /etc/sudoers.d/* or /etc/doas.conf has, outside comments, Defaults and
#   Cmnd/Host aliases, a word equal to the user's name, its group's name (also %group),
#   #uid or #gid (%#gid), or a rule for ALL users: read as words, so a false match
#   refuses where a parser's mistake might admit.
# An existing account that passes is used as it is; otherwise one is added (and its group).
PRIV_GROUPS='root wheel sudo admin adm disk kvm docker lxd libvirt libvirt-qemu shadow staff
    systemd-journal tty kmem sys operator utmp input video render'
why=$(awk -F: -v u="$uid" -v g="$gid" -v n="$user" '
    $3 == u { c++ }
    $3 == u && $1 != n { w = "uid " u " is the image account " $1; exit }
    $3 == u && $4 != g { w = "image account " n " has primary group " $4 ", not " g; exit }
    $3 != u && $1 == n { w = "user name " n " is taken by uid " $3 " in the image"; exit }
    $3 != u && $4 == g { w = "gid " g " is the primary group of the image account " $1; exit }
    END { if (w == "" && c > 1) w = "uid " u " has " c " entries in /etc/passwd"; print w }
' "$ETC"/passwd) || fail "cannot read /etc/passwd"
[ -z "$why" ] || fail_job "$why"
why=$(awk -F: -v g="$gid" -v n="$user" -v priv="$PRIV_GROUPS" '
    BEGIN { k = split(priv, p, " "); for (i = 1; i <= k; i++) bad[p[i]] = 1 }
    { k = split($4, m, ",") }
    $3 == g {
        c++
        if ($1 in bad) { w = "gid " g " is the image group " $1; exit }
        for (i = 1; i <= k; i++)
            if (m[i] != n) { w = "gid " g " (image group " $1 ") has other members"; exit }
        next
    }
    { for (i = 1; i <= k; i++) if (m[i] == n) { w = "user " n " is a member of the image group " $1; exit } }
    END { if (w == "" && c > 1) w = "gid " g " has " c " entries in /etc/group"; print w }
' "$ETC"/group) || fail "cannot read /etc/group"
[ -z "$why" ] || fail_job "$why"
have_user=$(awk -F: -v u="$uid" '$3 == u { print "yes"; exit }' "$ETC"/passwd)
gname=$(awk -F: -v g="$gid" '$3 == g { print $1; exit }' "$ETC"/group) || fail "cannot read /etc/group"
new_group=
if [ -z "$gname" ]; then
    new_group=yes
    for gname in "$user" "racf$gid"; do
        awk -F: -v n="$gname" '$1 == n { f = 1 } END { exit !f }' "$ETC"/group || break
    done
    awk -F: -v n="$gname" '$1 == n { f = 1 } END { exit !f }' "$ETC"/group \
        && fail_job "no free group name for gid $gid"
fi
for f in "$ETC"/sudoers "$ETC"/sudoers.d/* "$ETC"/doas.conf; do
    [ -f "$f" ] || continue
    awk -v n="$user" -v gn="$gname" -v u="#$uid" -v gi="#$gid" '
        /^[ \t]*#/ && !/^[ \t]*#[0-9]/ { next }
        /^[ \t]*(@include|Defaults[ \t]|Defaults$|Cmnd_Alias|Host_Alias)/ { next }
        {
            gsub(/[^A-Za-z0-9_.%#+-]+/, " ")
            k = split($0, t, " ")
            if (t[1] == "ALL") exit 1
            for (i = 1; i <= k; i++) {
                w = t[i]
                sub(/^[%+]+/, "", w)
                if (w == n || w == gn || w == u || w == gi) exit 1
                if (t[1] == "User_Alias" && w == "ALL") exit 1
            }
        }' "$f" || fail_job "$f names user $user or group $gname (or every user)"
done
if [ -n "$new_group" ]; then
    printf '%s:x:%s:\n' "$gname" "$gid" >>"$ETC"/group || fail "cannot write /etc/group"
fi
if [ -z "$have_user" ]; then
    printf '%s:x:%s:%s::%s:/bin/sh\n' "$user" "$uid" "$gid" "$wd" >>"$ETC"/passwd \
        || fail "cannot write /etc/passwd"
fi
[ "$(awk -F: -v n="$user" '$1 == n { print $3; exit }' "$ETC"/passwd)" = "$uid" ] \
    || fail_job "user $user does not map to uid $uid"

if setpriv --help 2>&1 | grep -q -e --reuid; then
    as_user() { setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"; }
else
    # the script string is fixed; the command travels as positional parameters
    # (options before "--": busybox su permutes options and would parse the job's argv)
    as_user() { su -s /bin/sh -c 'exec "$@"' -- "$user" sh "$@"; }
fi

# -- working directory ----------------------------------------------------------------------
# Each component of $root must be a directory owned by root; absent ones are made (root's,
# 0755); a symlink or anything else there is refused. $wd itself must not exist: it is made
# 0700 and given to the job's user. Nothing else is created or chowned. (Root acts on these
# paths only here, before any process of the job's user exists; everything after the job
# is done as the user.)
root_dirs() { # root_dirs PATH: every component a root-owned directory (absent ones made)
    p= rest=${1#/}
    while [ -n "$rest" ]; do
        c=${rest%%/*}
        case $rest in */*) rest=${rest#*/} ;; *) rest= ;; esac
        p=$p/$c
        [ -L "$p" ] && fail_job "$p is a symbolic link in the image"
        [ -e "$p" ] || mkdir -m 0755 "$p" || fail "cannot create $p"
        [ -d "$p" ] && [ ! -L "$p" ] || fail_job "$p is not a directory in the image"
        [ "$(stat -c %u "$p")" = 0 ] || fail_job "$p is not owned by root in the image"
    done
}
root_dirs "$root"
[ -e "$wd" ] || [ -L "$wd" ] && fail_job "workdir already exists in the image"
mkdir -m 0700 "$wd" || fail "cannot create workdir"
chown "$uid:$gid" "$wd" || fail "cannot set up workdir"

# -- storage: scratch and data disks, and /tmp -------------------------------------------------
# The disks are found by serial; their mount points were checked by the host (absolute,
# clean, outside the system's directories and the workdir) and are checked again here,
# every component root's, like the workdir root. Mounted nosuid,nodev.
disk_by_serial() { # disk_by_serial SERIAL -> $v (the block device)
    v=
    for b in /sys/block/vd*; do
        [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && v=/dev/${b##*/}
    done
    [ -n "$v" ] && [ -b "$v" ]
}
mount_disk() { # mount_disk SERIAL PATH OPTIONS
    case $2 in
        / | */ | *[!A-Za-z0-9._/+-]* | */../* | */.. | */./* | */. | *//*) fail "bad mount path for $1" ;;
        /*) ;;
        *) fail "bad mount path for $1" ;;
    esac
    disk_by_serial "$1" || fail "no disk $1"
    root_dirs "$2"
    mount -o "$3" "$v" "$2" || fail "cannot mount $1 on $2"
    mounted="$2 $mounted"
}
mounted= scratch=
if [ -f "$J/scratch_path" ]; then
    readline scratch_path; scratch=$v
    mount_disk racf-scratch "$scratch" nosuid,nodev
    [ "$(stat -c %u "$scratch")" = "$uid" ] || fail "the scratch disk is not the job's"
fi
if [ -f "$J/data_path" ]; then
    readline data_path; dpath=$v
    readline data_mode; dmode=$v
    case $dmode in ro|rw) ;; *) fail "bad data mode" ;; esac
    mount_disk racf-data "$dpath" "$dmode,nosuid,nodev"
fi
# /tmp: on the scratch disk when there is one, else a tmpfs of a quarter of the memory
# (no process of the job exists yet: root makes .tmp on the fresh filesystem safely)
if [ -n "$scratch" ]; then
    mkdir -m 1777 "$scratch/.tmp" && chmod 1777 "$scratch/.tmp" \
        && mount -o bind "$scratch/.tmp" /tmp || fail "cannot put /tmp on the scratch disk"
else
    mount -t tmpfs -o mode=1777,nosuid,nodev,size=25% tmpfs /tmp || fail "cannot mount /tmp"
fi
mounted="/tmp $mounted"

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

# -- change marker --------------------------------------------------------------------------
# What goes back is what the job created or changed: every non-directory whose ctime is not
# before the marker's (the kernel sets ctime on every write, truncate, chmod, rename, link
# and utime, and nobody can set it back). The marker is made on a tick of the file clock
# strictly after the last input file's, so no input file is as new as the marker, and
# anything the job does is.
ctime_of() { # ctime_of FILE -> $cs $cn (ctime: seconds, nanoseconds)
    t=$(stat -c '%Z %z' "$1") || return 1
    cs=${t%% *}; t=${t#* }; t=${t#* }; t=${t%% *}; cn=${t#*.}
    case $cs$cn in ''|*[!0-9]*) return 1 ;; esac
}
: >"$J/mark0" && ctime_of "$J/mark0" || fail "cannot read the file clock"
s0=$cs n0=$cn
i=0
while :; do
    rm -f "$J/mark" && : >"$J/mark" && ctime_of "$J/mark" || fail "cannot read the file clock"
    [ "$cs" -gt "$s0" ] || { [ "$cs" -eq "$s0" ] && [ "$cn" -gt "$n0" ]; } && break
    i=$((i + 1))
    [ $i -lt 1000 ] || fail "the file clock does not move"
    sleep 0.001 2>/dev/null || sleep 1
done
mark_s=$cs mark_n=$cn
}

# -- maintenance mode -------------------------------------------------------------------------
# Only `racf-vm images maintain` writes job/maintenance (the host's job path refuses to), on
# the master copy booted on its maintenance layer. Then the command runs as root in /, the
# files the layer moved aside (/racf/undo, /racf/orig) are put back, /racf goes, and the
# guest powers off cleanly: the host commits the disk only after all of that succeeded.
maintain() {
    status started
    (cd / && "$@") </dev/null >"$P_STDOUT" 2>"$P_STDERR" 9>&-
    rc=$?
    [ $rc -le 255 ] || rc=255
    [ -f /racf/undo ] || fail "no /racf/undo: not a maintenance layer"
    while read -r p; do
        case $p in /?*) ;; *) fail "bad entry in /racf/undo" ;; esac
        b=/racf/orig/$(printf '%s' "${p#/}" | tr / %)
        if [ -e "$b" ] || [ -L "$b" ]; then
            rm -f "$p" && mv -f "$b" "$p" || fail "cannot put back $p"
        else
            rm -f "$p" || fail "cannot remove $p"
        fi
    done </racf/undo
    rm -rf /racf || fail "cannot remove /racf"
    dd if=/dev/zero bs=512 count=2 2>/dev/null >"$P_OUTPUT" 9>&-   # no output files: an empty tar
    status "exit $rc"
    exec 9>&-
    sync
    mount -o remount,ro / 2>/dev/null
    sync
    poweroff -f
    exit 1
}

if [ -f "$J/maintenance" ]; then
    MAINT=yes
else
    MAINT=
    setup_job
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
[ -z "$MAINT" ] || maintain "$@"
status started
(cd "$wd" && as_user "$@") </dev/null >"$P_STDOUT" 2>"$P_STDERR" 9>&-
rc=$?
[ $rc -le 255 ] || rc=255

# nothing of the job may outlive it (kill -1 from the user's own shell spares only that shell)
as_user /bin/sh -c 'kill -9 -1' </dev/null >/dev/null 2>&1 9>&-
as_user /bin/sh -c 'kill -9 -1' </dev/null >/dev/null 2>&1 9>&-

# Only what the job created or changed goes back. The workdir is thrown away with the guest,
# so, as the job's user: every non-directory older than the marker is removed from it (and a
# kept file with other hard links becomes a file of its own: the host takes no links), then
# every directory left empty; the rest is sent. PRUNE is fixed text: the names reach it as
# arguments from find, in batches; a batch it cannot judge is kept whole.
PRUNE='ms=$1 mn=$2
shift 2
out=$(stat -c "%Z %z %h %f" -- "$@") || exit 0
n=$#
while read -r cs d t z h f; do
    [ "$n" -gt 0 ] || exit 0
    x=$1
    shift
    n=$((n - 1))
    cn=${t#*.}
    if [ "$cs" -lt "$ms" ] || { [ "$cs" -eq "$ms" ] && [ "$cn" -lt "$mn" ]; }; then
        set -- "$@" "$x"
    elif [ "$h" -gt 1 ] && case $f in 8???) true ;; *) false ;; esac; then
        c=$(mktemp "$x.XXXXXX") && cp -p -- "$x" "$c" && mv -f -- "$c" "$x" || rm -f -- "$c"
    fi
done <<EOF
$out
EOF
[ "$n" -eq 0 ] || exit 0
[ $# -eq 0 ] || rm -f -- "$@"'
as_user /bin/sh -c 'cd "$1" || exit 1
find . -mindepth 1 ! -type d -exec sh -c "$2" sh "$3" "$4" {} +
find . -mindepth 1 -depth -type d -exec rmdir -- {} +
exit 0' sh "$wd" "$PRUNE" "$mark_s" "$mark_n" </dev/null >/dev/null 2>&1 9>&-
(cd / && as_user tar -C "$wd" -cf - .) </dev/null >"$P_OUTPUT" 2>/dev/null 9>&-
# the disks go back clean (an exported scratch disk is used again): before the host,
# which stops the guest once it has the exit status, can
for m in $mounted; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
sync
status "exit $rc"
exec 9>&-
halt
