"""Search as a directory: FOLDER/.search/QUERY/ and MOUNT/.search/QUERY/
through a real mount, each grammar element compared with Dovecot's own
UID SEARCH of the same criteria on generated mail."""
import email.utils
import errno
import glob
import os
import re
import subprocess
import time

from harness import check, eq, mutf7_decode, wait_for

M = None  # the shared mount of this module
DELIM = "/"

DIRNAME = re.compile(r"^\d{4}-\d\d-\d\d \d{4} .+ \u2014 .* \u00b7(\d+)$")

# (from, to, cc, subject, date, body, flags) of the generated mail
PEOPLE = [
    ("Bob Jones <bob@example.test>", "Carol <carol@example.test>", None),
    ("J\u00fcrgen Gr\u00f6\u00df <juergen@example.test>",
     "alice@example.test", "Dave <dave@example.test>"),
    ("\u5c71\u7530\u592a\u90ce <yamada@example.test>", "alice@example.test",
     None),
    ("Carol <carol@example.test>", "Bob Jones <bob@example.test>",
     "dave@example.test"),
]
SUBJECTS = ["Invoice 42", "Gr\u00f6\u00dfe aus M\u00fcnchen",
            "quarterly report", "\u4f1a\u8b70\u306e\u4ef6", "apples"]
BODIES = ["apples and pears", "the quarterly report is late",
          "nothing to see", "Gr\u00fc\u00dfe, J\u00fcrgen"]
# Dates on both sides of midnight, in several time zones.
DATES = ["Mon, 16 Nov 2026 09:30:00 +0000",
         "Tue, 17 Nov 2026 23:30:00 -0500",
         "Wed, 18 Nov 2026 00:30:00 +0900",
         "Sun, 15 Nov 2026 12:00:00 +0100"]
FLAGS = ["", "\\Seen", "\\Flagged", "\\Answered \\Seen", "\\Draft",
         "\\Deleted"]


def header(name, value):
    if all(ord(ch) < 128 for ch in value):
        return "%s: %s\r\n" % (name, value)
    if name in ("From", "To", "Cc"):
        disp, addr = email.utils.parseaddr(value)
        return "%s: %s\r\n" % (name, email.utils.formataddr(
            (disp, addr), charset="utf-8"))
    from email.header import Header
    return "%s: %s\r\n" % (name, Header(value, "utf-8").encode())


def make(i):
    frm, to, cc = PEOPLE[i % len(PEOPLE)]
    text = (header("From", frm) + header("To", to) +
            (header("Cc", cc) if cc else "") +
            header("Subject", SUBJECTS[i % len(SUBJECTS)]) +
            "Date: %s\r\n" % DATES[i % len(DATES)] +
            "Message-ID: <search-%d@example.test>\r\n" % i +
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" +
            BODIES[i % len(BODIES)] + "\r\n" +
            ("padding line\r\n" * (400 if i % 5 == 0 else 0)))
    return text.encode()


def server_search(env, folder, criteria, literal=None):
    """UIDs the server finds in folder: UID SEARCH [CHARSET UTF-8]
    criteria, with literal (bytes) as the last argument when given."""
    c = env.imap()
    c.select('"%s"' % folder, readonly=True)
    if literal is not None:
        c.literal = literal
        typ, data = c.uid("SEARCH", "CHARSET", "UTF-8", *criteria)
    else:
        typ, data = c.uid("SEARCH", *criteria)
    c.logout()
    eq(typ, "OK", "server search %r" % (criteria,))
    return {int(x) for x in data[0].split()}


def uids_in(path):
    out = set()
    for n in os.listdir(path):
        m = DIRNAME.match(n)
        check(m, "a message directory name: %r" % n)
        out.add(int(m.group(1)))
    return out


def folder_path(name):
    return os.path.join(M.path, *name.split(DELIM))


def setup_module(env):
    global M, DELIM
    c = env.imap()
    typ, data = c.list('""', '""')
    m = re.match(rb'\(.*?\) "(.)"', data[0])
    DELIM = m.group(1).decode() if m else "/"
    for box in ("Srch", "Srch" + DELIM + "Sub"):
        c.create(box)
    for i in range(30):
        box = "Srch" if i < 24 else "Srch" + DELIM + "Sub"
        flags = FLAGS[i % len(FLAGS)]
        c.append(box, "(%s)" % flags if flags else None, None, make(i))
    c.logout()
    M = env.mount()


def teardown_module(env):
    if M is not None:
        M.umount()


# query -> (criteria, literal) for the server's UID SEARCH
CASES = [
    ("from:bob", ["FROM", "bob"], None),
    ("to:carol", ["TO", "carol"], None),
    ("cc:dave", ["CC", "dave"], None),
    ("subject:invoice", ["SUBJECT", "invoice"], None),
    ("body:apples", ["BODY", "apples"], None),
    ("text:quarterly", ["TEXT", "quarterly"], None),
    ("pears", ["TEXT", "pears"], None),
    ("since:2026-11-17", ["SENTSINCE", "17-Nov-2026"], None),
    ("before:2026-11-17", ["SENTBEFORE", "17-Nov-2026"], None),
    ("larger:4k", ["LARGER", "4096"], None),
    ("smaller:1k", ["SMALLER", "1024"], None),
    ("is:seen", ["SEEN"], None),
    ("is:flagged", ["FLAGGED"], None),
    ("is:answered", ["ANSWERED"], None),
    ("is:draft", ["DRAFT"], None),
    ("is:deleted", ["DELETED"], None),
    ('"quarterly report"', ["TEXT", '"quarterly report"'], None),
    ('from:"Bob Jones"', ["FROM", '"Bob Jones"'], None),
    ("-is:seen", ["NOT", "SEEN"], None),
    ("from:bob or from:carol", ["OR", "FROM", "bob", "FROM", "carol"], None),
    ("from:bob -is:seen larger:1k",
     ["FROM", "bob", "NOT", "SEEN", "LARGER", "1024"], None),
    ("from:j\u00fcrgen", ["FROM"], "j\u00fcrgen"),
    ("subject:Gr\u00f6\u00dfe", ["SUBJECT"], "Gr\u00f6\u00dfe"),
    ("from:\u5c71\u7530", ["FROM"], "\u5c71\u7530"),
    ("subject:\u4f1a\u8b70", ["SUBJECT"], "\u4f1a\u8b70"),
    ("is:seen body:J\u00fcrgen", ["SEEN", "BODY"], "J\u00fcrgen"),
]


def test_each_grammar_element_matches_server(env):
    for query, criteria, literal in CASES:
        want = server_search(env, "Srch", criteria,
                             literal.encode() if literal else None)
        got = uids_in(os.path.join(folder_path("Srch"), ".search", query))
        eq(got, want, "matches of %r" % query)
    # the cases are not all empty or all full
    every = server_search(env, "Srch", ["ALL"])
    sizes = {len(uids_in(os.path.join(folder_path("Srch"), ".search", q)))
             for q, _, _ in CASES}
    check(len(sizes) > 3 and max(sizes) < len(every),
          "the cases tell messages apart: %r" % sizes)


def test_links_resolve_to_message_directories(env):
    base = folder_path("Srch")
    q = os.path.join(base, ".search", "from:bob")
    names = os.listdir(q)
    check(names, "from:bob has matches")
    for n in names:
        link = os.path.join(q, n)
        check(os.path.islink(link), "%r is a symbolic link" % n)
        eq(os.readlink(link), "../../" + n, "target of %r" % n)
        eq(os.path.realpath(link), os.path.join(os.path.realpath(base), n),
           "resolved %r" % n)
        check(os.path.isdir(link), "%r leads to a directory" % n)
    bodies = glob.glob(os.path.join(glob.escape(q), "*", "body.txt"))
    eq(len(bodies), len(names), "one body.txt per match")
    for b in bodies:
        with open(b, "rb") as f:
            check(b"apples" in f.read() or True, "body.txt readable")
    with open(os.path.join(q, names[0], "message.eml"), "rb") as f:
        check(b"bob@example.test" in f.read(), "message.eml of a match")


def test_bad_queries_are_einval(env):
    base = os.path.join(folder_path("Srch"), ".search")
    for query, reason in [("since:yesterday", "not a date YYYY-MM-DD"),
                          ("foo:bar", "unknown key foo:"),
                          ('from:"Alice', "unbalanced quote"),
                          ("larger:lots", "not a size")]:
        try:
            os.listdir(os.path.join(base, query))
        except OSError as e:
            eq(e.errno, errno.EINVAL, "errno of %r" % query)
        else:
            raise AssertionError("%r was accepted" % query)
        check(reason in M.output(), "the log says why %r: %s" % (
            query, M.output()[-2000:]))
    check("since:yesterday" not in os.listdir(base),
          "a bad query is not kept")


def test_search_dir_is_in_no_listing(env):
    base = folder_path("Srch")
    os.listdir(os.path.join(base, ".search", "from:carol"))
    check(".search" not in os.listdir(base), ".search not in ls FOLDER")
    check(".search" not in os.listdir(M.path), ".search not in ls MOUNT")
    check(os.path.isdir(os.path.join(base, ".search")),
          ".search reachable by name")
    found = []
    for root, dirs, files in os.walk(M.path):
        found += [d for d in dirs if d == ".search"]
        dirs[:] = [d for d in dirs if not DIRNAME.match(d)]
    eq(found, [], "find does not wander into .search")
    s = os.path.join(base, ".search")
    check("from:carol" in os.listdir(s), "ls .search shows the queries")
    os.rmdir(os.path.join(s, "from:carol"))
    check("from:carol" not in os.listdir(s), "rmdir forgets a query")
    # and it can be asked again
    check(os.listdir(os.path.join(s, "from:carol")), "asked again")
    # rm -r forgets it too, and leaves the messages alone
    before = sorted(os.listdir(base))
    subprocess.run(["rm", "-r", os.path.join(s, "from:carol")], check=True)
    check("from:carol" not in os.listdir(s), "rm -r forgets a query")
    eq(sorted(os.listdir(base)), before, "the messages after rm -r of a query")
    r = os.path.join(M.path, ".search", "from:carol")
    check(os.listdir(r), "a root query")
    subprocess.run(["rm", "-r", r], check=True)
    check("from:carol" not in os.listdir(os.path.join(M.path, ".search")),
          "rm -r forgets a root query")
    eq(sorted(os.listdir(base)), before,
       "the messages after rm -r of a root query")


def test_touch_searches_again(env):
    q = os.path.join(folder_path("Srch"), ".search", "subject:latecomer")
    eq(os.listdir(q), [], "no latecomer yet")
    c = env.imap()
    c.append("Srch", None, None,
             b"From: Late <late@example.test>\r\nSubject: latecomer\r\n"
             b"Date: Thu, 19 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n")
    c.logout()
    os.utime(q)
    names = os.listdir(q)
    eq(len(names), 1, "the new message after touch")
    check(os.path.isdir(os.path.join(q, names[0])),
          "a match not listed before leads to its directory")


def test_root_search_shows_the_folder_tree(env):
    q = os.path.join(M.path, ".search", "from:carol")
    want = {}
    c = env.imap()
    typ, data = c.list()
    c.logout()
    for line in data:
        m = re.match(rb'\((.*?)\) (NIL|"(.)") (.*)$', line)
        if b"\\Noselect" in m.group(1) or b"\\NonExistent" in m.group(1):
            continue
        name = m.group(4).decode()
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        uids = server_search(env, name, ["FROM", "carol"])
        if uids:
            want[name] = uids
    check("Srch" in want and "Srch" + DELIM + "Sub" in want,
          "matches in a folder and its subfolder: %r" % want)
    got = {}
    for root, dirs, files in os.walk(q):
        rel = os.path.relpath(root, q)
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links]
        if not links:
            continue
        parts = rel.split(os.sep)
        got[DELIM.join(parts)] = {int(DIRNAME.match(n).group(1))
                                  for n in links}
        for n in links:
            depth = len(parts) + 2
            eq(os.readlink(os.path.join(root, n)),
               "../" * depth + "/".join(parts) + "/" + n, "root link target")
            check(os.path.isdir(os.path.join(root, n, "")),
                  "root link %r resolves" % n)
    want = {DELIM.join(mutf7_decode(p) for p in k.split(DELIM)): v
            for k, v in want.items()}
    eq(got, want, "the root search over every folder")


def test_pop3_search(env):
    cfg = env.write_config("config-pop3-search", {
        "imap": None, "pop3": "pop3s://localhost:%s" % env["MFS_POP3S_PORT"]})
    c = env.imap()
    c.append("INBOX", None, None,
             b"From: Popper <popper@example.test>\r\nSubject: pop search\r\n"
             b"To: Zed Unique <zed.unique@example.test>\r\n"
             b"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n\r\nhello pop\r\n")
    c.logout()
    with env.mount(config=cfg) as m:
        inbox = os.path.join(m.path, "INBOX")
        q = os.path.join(inbox, ".search", "from:popper")
        names = os.listdir(q)
        eq(len(names), 1, "one POP3 match")
        check("pop search" in names[0], "the match: %r" % names)
        check(os.path.isdir(os.path.join(q, names[0])), "it resolves")
        with open(os.path.join(q, names[0], "body.txt"), "rb") as f:
            check(b"hello pop" in f.read(), "its body")
        eq(len(os.listdir(os.path.join(inbox, ".search",
                                       "subject:\"pop search\" "
                                       "since:2026-11-20"))), 1,
           "subject and date terms")
        # text terms: the messages are read, as grep would
        body = os.listdir(os.path.join(inbox, ".search",
                                       'body:"hello pop"'))
        eq(body, names, "a body term on POP3")
        eq(os.listdir(os.path.join(inbox, ".search",
                                   "to:nobody-here from:popper")), [],
           "a to: term on POP3")
        for query, crit in [('body:"hello pop"', ["BODY", '"hello pop"']),
                            ("to:zed.unique", ["TO", "zed.unique"]),
                            ("text:popper", ["TEXT", "popper"])]:
            want = server_search(env, "INBOX", crit)
            check(want, "the server finds %s" % query)
            eq(len(os.listdir(os.path.join(inbox, ".search", query))),
               len(want),
               "POP3 %s against the server's search of the same mail" %
               query)
        check("reading the messages" in m.output(),
              "the log says the messages are read: %s" %
              m.output()[-1000:])


def test_matches_of_an_unlisted_folder_then_its_listing(env):
    """A fresh mount: the matches of a folder not listed yet come with the
    search (their entries only); the folder's listing is still whole."""
    with env.mount() as m:
        base = os.path.join(m.path, *("Srch" + DELIM + "Sub").split(DELIM))
        q = os.path.join(base, ".search", "from:carol")
        want = server_search(env, "Srch" + DELIM + "Sub", ["FROM", "carol"])
        check(want, "matches in Srch/Sub")
        eq(uids_in(q), want, "matches before any listing")
        for n in os.listdir(q):
            check(os.path.isfile(os.path.join(q, n, "body.txt")),
                  "a match of an unlisted folder resolves")
        eq(uids_in(base), server_search(env, "Srch" + DELIM + "Sub",
                                        ["ALL"]),
           "the folder's listing afterwards")
