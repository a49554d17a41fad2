"""Mounting as users do it: fstab entries of type mailfs (our helper) and
fuse.mailfs (mount.fuse3) through mount(8), a `user` entry mounted by a
non-root user, the systemd user unit, the command line, and the manual
pages.

mount(8) finds the helper only as /sbin/mount.mailfs (util-linux has no
option to look elsewhere), and it removes PATH from the environment of every
helper, so mount.fuse3 finds `mailfs` only in the shell's default PATH
(/usr/local/bin ...). For the time of this module two symbolic links point
there to this tree: /sbin/mount.mailfs and /usr/local/bin/mailfs. They are
made only when nothing is at those paths, and removed in teardown_module.
A test user (mailfs-test-user) is created when missing and removed again.
"""
import os
import pwd
import re
import shutil
import subprocess
import tempfile

from harness import MAILFS, ROOT, Skip, check, eq, wait_for

HELPER = os.path.join(ROOT, "mount-helpers", "mount.mailfs")
UNIT = os.path.join(ROOT, "mount-helpers", "mailfs@.service")
PAGES = [os.path.join(ROOT, "docs", "mailfs.1"),
         os.path.join(ROOT, "docs", "mailfs.conf.5")]
USER = "mailfs-test-user"

LINKS = {"/sbin/mount.mailfs": HELPER, "/usr/local/bin/mailfs": MAILFS}
made_links = []
link_problem = None
made_user = False


def setup_module(env):
    global link_problem, made_user
    for path, target in LINKS.items():
        if os.path.islink(path) and os.readlink(path) == target:
            made_links.append(path)  # left over from an interrupted run
        elif os.path.lexists(path):
            link_problem = ("%s exists (an installed mailfs?); not replacing "
                            "it" % path)
        else:
            os.symlink(target, path)
            made_links.append(path)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
        made_user = True
    c = env.imap()
    c.append("INBOX", None, None,
             b"From: Mount Test <m@example.test>\r\nTo: alice@example.test\r\n"
             b"Subject: mounting\r\nDate: Thu, 20 Nov 2026 10:00:00 +0000\r\n"
             b"Message-ID: <mounting@example.test>\r\n\r\nhello\r\n")
    c.logout()


def teardown_module(env):
    for path in made_links:
        if os.path.islink(path):
            os.unlink(path)
    if made_user:
        subprocess.run(["pkill", "-KILL", "-u", USER],
                       stderr=subprocess.DEVNULL)
        subprocess.run(["userdel", "-r", USER], stderr=subprocess.DEVNULL)


# --- helpers -------------------------------------------------------------


def need_links():
    if link_problem:
        raise Skip(link_problem)


def run(cmd, **kw):
    kw.setdefault("timeout", 60)
    return subprocess.run(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, **kw)


def as_user(cmd, **kw):
    return run(["runuser", "-u", USER, "--"] + cmd, **kw)


def text(proc):
    return proc.stdout.decode("utf-8", "replace")


def mountinfo(path):
    """The /proc/self/mountinfo line of the mount at path, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                return line
    return None


def force_umount(path):
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-uz", path], stderr=subprocess.DEVNULL)
        subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def message_names(names):
    return [n for n in names if re.search(r" \u00b7\d+$", n)]


def user_dir(env):
    """A directory for the test user's files, and their passwd entry."""
    ent = pwd.getpwnam(USER)
    d = tempfile.mkdtemp(prefix="user-", dir=env.dir)
    os.chmod(d, 0o755)
    return d, ent


def user_account(env, d, ent, config_path):
    """Writes a config for the user (readable CA copy, 0600 password file
    owned by them, cache under d) at config_path; returns the mount point."""
    ca = os.path.join(d, "ca.pem")
    shutil.copy(env["MFS_CA"], ca)
    os.chmod(ca, 0o644)
    pw = os.path.join(d, "pass")
    with open(pw, "w") as f:
        f.write(env["MFS_PASS"] + "\n")
    os.chmod(pw, 0o600)
    os.makedirs(os.path.dirname(config_path), exist_ok=True)
    with open(config_path, "w") as f:
        f.write("[test]\nimap = imaps://localhost:%s\nuser = %s\n"
                "password_file = %s\nca_file = %s\ncache_dir = %s\n"
                "timeout = 5\n" % (env["MFS_IMAPS_PORT"], env["MFS_USER"],
                                   pw, ca, os.path.join(d, "cache")))
    mnt = os.path.join(d, "mnt")
    os.mkdir(mnt)
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            os.chown(os.path.join(root, n), ent.pw_uid, ent.pw_gid)
    os.chown(d, ent.pw_uid, ent.pw_gid)
    return mnt


def write_fstab(env, lines):
    fd, path = tempfile.mkstemp(prefix="fstab-", dir=env.dir)
    with os.fdopen(fd, "w") as f:
        f.write("# mailfs test fstab\n" + "\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


def fstab_mount_as_root(env, fstype):
    need_links()
    mnt = tempfile.mkdtemp(prefix="fstab-mnt-", dir=env.dir)
    fstab = write_fstab(env, ["test %s %s noauto,_netdev,config=%s 0 0" %
                              (mnt, fstype, env.config)])
    try:
        p = run(["mount", "-T", fstab, mnt])
        eq(p.returncode, 0, "mount -T exit status (%s)" % text(p))
        check(os.path.ismount(mnt), "%s is a mount point" % mnt)
        info = mountinfo(mnt)
        check(info is not None and " - fuse.mailfs mailfs:test " in info,
              "mountinfo shows fuse.mailfs from mailfs:test: %r" % info)
        names = os.listdir(os.path.join(mnt, "INBOX"))
        check(message_names(names), "ls INBOX shows messages: %r" % names)
        p = run(["umount", mnt])
        eq(p.returncode, 0, "umount exit status (%s)" % text(p))
        check(not os.path.ismount(mnt), "unmounted")
    finally:
        force_umount(mnt)


# --- fstab, as root ------------------------------------------------------


def test_fstab_type_mailfs_through_helper(env):
    fstab_mount_as_root(env, "mailfs")


def test_fstab_type_fuse_mailfs_through_mount_fuse3(env):
    fstab_mount_as_root(env, "fuse.mailfs")


# --- fstab, as a user ----------------------------------------------------


def user_ns_run(mnt, commands):
    """Runs shell commands as root in a private mount namespace, so that
    nothing done there (a bind mount over /etc/fstab) is seen outside.
    When /dev/fuse is not open to every user (Debian's udev makes it 0666;
    some containers leave it 0600), a 0666 node for the same device is
    bind-mounted over it in that namespace only. A mount left behind is
    removed on exit. Returns (exit status, output)."""
    rdev = os.stat("/dev/fuse").st_rdev
    script = """set -e
trap 'fusermount3 -uz %(mnt)s 2>/dev/null || true' EXIT
if ! runuser -u %(user)s -- test -r /dev/fuse -a -w /dev/fuse; then
    d=$(mktemp -d)
    mount -t tmpfs -o mode=0755,size=64k mailfs-test-dev "$d"
    mknod -m 0666 "$d/fuse" c %(major)d %(minor)d
    mount --bind "$d/fuse" /dev/fuse
fi
""" % {"mnt": mnt, "user": USER, "major": os.major(rdev),
       "minor": os.minor(rdev)}
    p = run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
             script + commands])
    out = text(p)
    if p.returncode != 0 and out.startswith("unshare:"):
        raise Skip("no private mount namespace here: %s" % out.strip())
    return p.returncode, out


def check_user_mount(env, mnt, fstab_arg, prep=""):
    """After the root commands prep, mounts mnt as the test user with
    `mount FSTAB_ARG MNT`, then checks
    the owner (mountinfo user_id= and stat as the user), lists INBOX and
    unmounts as the user."""
    ent = pwd.getpwnam(USER)
    u = "runuser -u %s -- " % USER
    cmds = prep + ("%(u)s mount %(f)s %(m)s\n"
            "echo \"info: $(grep ' %(m)s ' /proc/self/mountinfo)\"\n"
            "echo \"owner: $(%(u)s stat -c %%u %(m)s)\"\n"
            "%(u)s ls %(m)s/INBOX | sed 's/^/ls: /'\n"
            "%(u)s umount %(m)s\n"
            "grep -q ' %(m)s ' /proc/self/mountinfo || echo UNMOUNTED\n"
            % {"u": u, "f": fstab_arg, "m": mnt})
    rc, out = user_ns_run(mnt, cmds)
    eq(rc, 0, "mount, stat, ls, umount as %s:\n%s" % (USER, out))
    lines = out.splitlines()
    info = [ln for ln in lines if ln.startswith("info: ")]
    check(info and " - fuse.mailfs mailfs:test " in info[0] and
          "user_id=%d" % ent.pw_uid in info[0],
          "a fuse.mailfs mount of uid %d: %r" % (ent.pw_uid, info))
    check("owner: %d" % ent.pw_uid in lines, "owner of the mount root: %r"
          % lines)
    check(message_names([ln[4:] for ln in lines if ln.startswith("ls: ")]),
          "ls INBOX as the user lists messages: %r" % lines)
    eq(lines[-1], "UNMOUNTED", "unmounted by the user")


def test_user_mounts_user_entry_with_alternative_fstab(env):
    """mount -T as a non-root user: mount(8) gives up its set-user-ID
    privileges and runs the helper as the user."""
    need_links()
    d, ent = user_dir(env)
    cfg = os.path.join(d, "config")
    mnt = user_account(env, d, ent, cfg)
    fstab = write_fstab(env, ["test %s mailfs user,noauto,config=%s 0 0" %
                              (mnt, cfg)])
    check_user_mount(env, mnt, "-T " + fstab)


def test_user_mounts_etc_fstab_entry_with_default_config(env):
    """The set-user-ID path of mount(8): an /etc/fstab `user` entry (our
    file bind-mounted over /etc/fstab in a private mount namespace) without
    config=, so ~/.config/mailfs/config is found although mount(8) removes
    HOME from the helper's environment: the README's example line."""
    need_links()
    d, ent = user_dir(env)
    cfg = os.path.join(ent.pw_dir, ".config", "mailfs", "config")
    mnt = user_account(env, d, ent, cfg)
    for sub in (".config", ".config/mailfs", ".config/mailfs/config"):
        os.chown(os.path.join(ent.pw_dir, sub), ent.pw_uid, ent.pw_gid)
    fstab = write_fstab(env, ["test %s mailfs noauto,user,_netdev 0 0" % mnt])
    check_user_mount(env, mnt, "",
                     prep="mount --bind %s /etc/fstab\n" % fstab)


# --- the helper on its own -----------------------------------------------


def test_helper_passes_fuse_options_and_drops_mount_options(env):
    fake = os.path.join(env.dir, "fake-mailfs")
    with open(fake, "w") as f:
        f.write('#!/bin/sh\necho "HOME=$HOME"\n'
                'for a in "$@"; do echo "arg:$a"; done\n')
    os.chmod(fake, 0o755)
    opts = ("rw,nosuid,nodev,user,users,noauto,auto,_netdev,nofail,defaults,"
            "x-systemd.automount,x-systemd.idle-timeout=60,comment=x,"
            "config=/c/f,allow_root")
    clean = {"MAILFS": fake, "PATH": "/usr/bin:/bin"}  # no HOME, as mount(8)
    p = run([HELPER, "my account", "/m/p", "-n", "-s", "-o", opts],
            env=clean)
    eq(p.returncode, 0, "helper exit status (%s)" % text(p))
    home = pwd.getpwuid(os.getuid()).pw_dir
    eq(text(p).splitlines(),
       ["HOME=" + home, "arg:-o", "arg:rw,nosuid,nodev,config=/c/f,allow_root",
        "arg:my account", "arg:/m/p"], "what mailfs is given")
    p = run([HELPER, "a", "/m", "-o", "noauto,user"], env=clean)
    eq(text(p).splitlines()[1:], ["arg:a", "arg:/m"], "no -o when none left")
    p = run([HELPER, "a", "/m", "-f", "-v", "-o", "config=/x"], env=clean)
    eq(p.returncode, 0, "fake mount succeeds")
    check("arg:" not in text(p), "-f (fake) does not run mailfs")
    check("running:" in text(p) and "config=/x" in text(p), "-v shows it")
    p = run([HELPER, "a", "/m", "--bogus"], env=clean)
    eq(p.returncode, 1, "unknown argument is an error")
    p = run([HELPER, "a", "/m", "-f", "-v"], env={"PATH": "/nonexistent"})
    installed = [m for m in ("/usr/local/bin/mailfs", "/usr/bin/mailfs")
                 if os.access(m, os.X_OK)]
    if installed:
        eq(p.returncode, 0, "found without PATH (%s)" % text(p))
        check("running: %s a /m" % installed[0] in text(p), text(p))
    else:
        eq(p.returncode, 1, "no mailfs found: exit 1")
        check("cannot find the mailfs program" in text(p), text(p))


# --- the command line ----------------------------------------------------


def test_help_and_version_exit_zero(env):
    p = env.mailfs(["--help"])
    eq(p.returncode, 0, "--help exit status")
    check(b"usage: mailfs" in p.stdout, "usage printed")
    p = env.mailfs(["--version"])
    eq(p.returncode, 0, "--version exit status")
    check(re.match(rb"mailfs \d+\.\d+", p.stdout), "version: %r" % p.stdout)


def test_bad_config_names_file_and_line(env):
    cfg = os.path.join(env.dir, "bad-config")
    with open(cfg, "w") as f:
        f.write("[test]\nimap = imaps://localhost:1\n# a comment\n"
                "colour = blue\n")
    p = env.mailfs(["--check", "-o", "config=" + cfg, "test"])
    eq(p.returncode, 1, "--check exit status")
    check(("%s:4:" % cfg).encode() in p.stdout and b"colour" in p.stdout,
          "file, line and key named: %r" % p.stdout)
    mnt = tempfile.mkdtemp(prefix="bad-mnt-", dir=env.dir)
    p = env.mailfs(["-o", "config=" + cfg, "test", mnt])
    eq(p.returncode, 1, "mount exit status")
    check(("%s:4:" % cfg).encode() in p.stdout, "mount names the line too")
    check(not os.path.ismount(mnt), "nothing mounted")


def test_cache_dir_of_another_user_is_refused(env):
    """Whoever owns the cache_dir could forge cached mail or change what
    the outbox sends: one that belongs to another user is refused, with
    its path named, and nothing is mounted."""
    cache = tempfile.mkdtemp(prefix="foreign-cache-", dir=env.dir)
    os.chown(cache, 65534, 65534)  # nobody
    cfg = env.write_config("config-foreign-cache", {"cache_dir": cache})
    mnt = tempfile.mkdtemp(prefix="foreign-mnt-", dir=env.dir)
    try:
        p = env.mailfs(["-f", "-o", "config=" + cfg, "test", mnt])
        eq(p.returncode, 1, "mount exit status (%s)" % text(p))
        check(cache in text(p) and "uid 65534" in text(p),
              "the error names the directory: %r" % text(p))
        check(not os.path.ismount(mnt), "nothing mounted")
    finally:
        force_umount(mnt)  # also when a check failed


def test_no_core_dump_and_not_dumpable(env):
    """mailfs holds the password in memory: its core limit is 0 and it is
    not dumpable, so no core file carries the password and the user's other
    processes cannot read its memory. The password_command, run as the test
    user, looks at its parent, mailfs --check: the files in /proc/PID/ of
    a process that is not dumpable belong to root, not to the user, and
    the user cannot read them."""
    d, ent = user_dir(env)
    out = os.path.join(d, "probe.out")
    probe = os.path.join(d, "probe")
    with open(probe, "w") as f:
        f.write("#!/bin/sh\n"
                "{ cat /proc/$PPID/comm\n"
                "  echo \"owner: $(stat -c %%u /proc/$PPID/environ)\"\n"
                "  if cat /proc/$PPID/environ >/dev/null 2>&1; then\n"
                "    echo readable; else echo unreadable; fi\n"
                "  grep '^Max core file size' /proc/$PPID/limits; } >%s\n"
                "echo %s\n" % (out, env["MFS_PASS"]))
    os.chmod(probe, 0o755)
    ca = os.path.join(d, "ca.pem")
    shutil.copy(env["MFS_CA"], ca)
    os.chmod(ca, 0o644)
    cfg = os.path.join(d, "config")
    with open(cfg, "w") as f:
        f.write("[test]\nimap = imaps://localhost:%s\nuser = %s\n"
                "password_command = %s\nca_file = %s\ncache_dir = %s\n"
                "timeout = 5\n" % (env["MFS_IMAPS_PORT"], env["MFS_USER"],
                                   probe, ca, os.path.join(d, "cache")))
    for n in (probe, ca, cfg, d):
        os.chown(n, ent.pw_uid, ent.pw_gid)
    p = run(["runuser", "-u", USER, "--", MAILFS, "--check", "-o",
             "config=" + cfg, "test"])
    eq(p.returncode, 0, "--check as %s (%s)" % (USER, text(p)))
    lines = open(out).read().splitlines()
    eq(lines[0], "mailfs", "the probe's parent")
    eq(lines[1], "owner: 0", "owner of /proc/PID/environ of mailfs run by "
       "uid %d" % ent.pw_uid)
    eq(lines[2], "unreadable", "its environ for the user's other processes")
    check(re.match(r"Max core file size\s+0\s+0\s", lines[3]), lines)
    # the mounted daemon too
    with env.mount() as m:
        with open("/proc/%d/limits" % m.proc.pid) as f:
            limits = f.read()
    check(re.search(r"^Max core file size\s+0\s+0\s", limits, re.M), limits)


def test_check_reports_tls_and_login(env):
    p = env.mailfs(["--check", "-o", "config=" + env.config, "test"])
    out = text(p)
    eq(p.returncode, 0, "--check exit status (%s)" % out)
    check(re.search(r"^tls: TLSv1\.[23]$", out, re.M), "TLS line: %r" % out)
    check(re.search(r"^login: ok", out, re.M), "login line: %r" % out)


# --- documentation and the systemd unit ----------------------------------


def test_man_pages_render_without_warnings(env):
    if shutil.which("man") is None:
        raise Skip("man is not installed")
    for page in PAGES:
        p = subprocess.run(["man", "-l", page], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=60)
        eq((p.returncode, p.stderr), (0, b""), "man -l %s" % page)
        p = subprocess.run(["man", "--warnings", "-l", page],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env=dict(os.environ, MANWIDTH="80"), timeout=60)
        eq((p.returncode, p.stderr), (0, b""), "man --warnings -l %s" % page)


def test_config_page_documents_every_key(env):
    with open(os.path.join(ROOT, "src", "config.c")) as f:
        keys = re.findall(r'\[K_\w+\] = "(\w+)"', f.read())
    check(len(keys) >= 12, "keys found in config.c: %r" % keys)
    p = run(["man", "-l", PAGES[1]], env=dict(os.environ, MANWIDTH="80"))
    page = text(p)
    for k in keys:
        check(re.search(r"^       %s\b" % k, page, re.M),
              "mailfs.conf(5) has an entry for %s" % k)


def unit_lines():
    with open(UNIT) as f:
        return [ln.strip() for ln in f if "=" in ln and not ln.startswith("#")]


def test_systemd_unit_verifies(env):
    need_links()  # systemd resolves "mailfs" in /usr/local/bin
    if shutil.which("systemd-analyze") is None:
        raise Skip("systemd-analyze is not installed")
    d = tempfile.mkdtemp(prefix="unit-", dir=env.dir)
    shutil.copy(UNIT, d)
    run_dir = os.path.join(d, "run")
    os.mkdir(run_dir, 0o700)
    p = run(["systemd-analyze", "--user", "verify", "--man=no",
             os.path.join(d, "mailfs@test.service")],
            env=dict(os.environ, XDG_RUNTIME_DIR=run_dir), cwd=d)
    eq((p.returncode, text(p)), (0, ""), "systemd-analyze verify")


def test_systemd_unit_commands_mount_and_unmount(env):
    """Runs the unit's ExecStartPre, ExecStart and ExecStop lines as systemd
    would (%I = account, %h = home), without a user service manager."""
    need_links()
    home = tempfile.mkdtemp(prefix="home-", dir=env.dir)
    os.makedirs(os.path.join(home, ".config", "mailfs"))
    shutil.copy(env.config, os.path.join(home, ".config", "mailfs", "config"))
    cmds = {}
    for ln in unit_lines():
        k, v = ln.split("=", 1)
        v = v.replace("%I", "test").replace("%i", "test").replace("%h", home)
        cmds.setdefault(k, []).append(v)
    check(any(" -f " in c for c in cmds["ExecStart"]), "mailfs runs with -f")
    child_env = dict(os.environ, HOME=home, PATH="/usr/local/bin:/usr/bin:/bin")
    child_env.pop("XDG_CONFIG_HOME", None)
    mnt = os.path.join(home, "Mail", "test")
    proc = None
    try:
        for c in cmds["ExecStartPre"]:
            p = run(c.lstrip("-").split(), env=child_env)
            check(c.startswith("-") or p.returncode == 0, "%s: %s" % (c, text(p)))
        check(os.path.isdir(mnt), "ExecStartPre made the mount point")
        proc = subprocess.Popen(cmds["ExecStart"][0].split(), env=child_env,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.ismount(mnt) or proc.poll() is not None, 20,
                 "the unit's mount")
        check(os.path.ismount(mnt), "mounted at ~/Mail/test")
        check(message_names(os.listdir(os.path.join(mnt, "INBOX"))),
              "messages listed")
        for c in cmds["ExecStop"]:
            p = run(c.split(), env=child_env)
            eq(p.returncode, 0, "%s: %s" % (c, text(p)))
        eq(proc.wait(timeout=15), 0, "mailfs exits 0 after ExecStop")
        check(not os.path.ismount(mnt), "unmounted")
    finally:
        force_umount(mnt)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
