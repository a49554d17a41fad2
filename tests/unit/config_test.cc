// config_test.cc - the INI parser, URL and key checks, and password sources.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>

extern "C" {
#include "config.h"
}

namespace
{

const char kMin[] = "[a]\n"
		    "imap = imaps://h.example\n"
		    "user = u\n"
		    "password_command = echo x\n";

int remove_entry(const char *path, const struct stat *, int, struct FTW *)
{
	return remove(path);
}

// Sets an environment variable for one test and restores it afterwards.
class EnvGuard
{
      public:
	explicit EnvGuard(const char *name) : name_(name)
	{
		const char *v = getenv(name);
		if (v != nullptr)
			old_ = v;
	}
	~EnvGuard()
	{
		if (old_)
			setenv(name_, old_->c_str(), 1);
		else
			unsetenv(name_);
	}

      private:
	const char *name_;
	std::optional<std::string> old_;
};

double now_s()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

class ConfigTest : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		char tmpl[] = "/tmp/mailfs-config-test-XXXXXX";
		ASSERT_NE(mkdtemp(tmpl), nullptr);
		dir_ = tmpl;
		home_ = dir_ + "/home";
		ASSERT_EQ(mkdir(home_.c_str(), 0700), 0);
		setenv("HOME", home_.c_str(), 1);
		unsetenv("XDG_CACHE_HOME");
		unsetenv("XDG_CONFIG_HOME");
		path_ = dir_ + "/config";
	}

	void TearDown() override
	{
		mfs_account_free(&acct_);
		nftw(dir_.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	}

	std::string Write(const std::string &name, const std::string &text,
			  mode_t mode = 0644)
	{
		std::string p = dir_ + "/" + name;
		std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
		chmod(p.c_str(), mode);
		return p;
	}

	int Load(const std::string &text, const char *section = "a")
	{
		Write("config", text);
		mfs_account_free(&acct_);
		return mfs_config_load(path_.c_str(), section, &acct_, &err_);
	}

	// Loads text and expects MFS_E_CONFIG naming the file, `line` (0: no
	// line) and `word`, with the account left zeroed.
	void ExpectError(const std::string &text, int line, const char *word,
			 const char *section = "a")
	{
		SCOPED_TRACE(text);
		ASSERT_EQ(Load(text, section), MFS_E_CONFIG);
		std::string msg = err_.msg;
		std::string where = path_ + ":";
		if (line > 0)
			where += std::to_string(line) + ":";
		EXPECT_EQ(msg.rfind(where, 0), 0u) << msg;
		EXPECT_NE(msg.find(word), std::string::npos)
		    << "'" << word << "' not in: " << msg;
		EXPECT_EQ(acct_.name, nullptr);
		EXPECT_EQ(acct_.store.host, nullptr);
		EXPECT_EQ(acct_.user, nullptr);
	}

	// An account whose password comes from cmd.
	void LoadCommand(const std::string &cmd, int timeout = 10)
	{
		ASSERT_EQ(Load("[a]\nimap = imaps://h\nuser = u\n"
			       "timeout = " +
			       std::to_string(timeout) +
			       "\npassword_command = " + cmd + "\n"),
			  MFS_OK)
		    << err_.msg;
	}

	void LoadFile(const std::string &file)
	{
		ASSERT_EQ(Load("[a]\nimap = imaps://h\nuser = u\n"
			       "password_file = " +
			       file + "\n"),
			  MFS_OK)
		    << err_.msg;
	}

	// mfs_password_get; returns the password or "" on error.
	std::string Password(int expect = MFS_OK)
	{
		char *pw = reinterpret_cast<char *>(1);
		int rc = mfs_password_get(&acct_, &pw, &err_);
		EXPECT_EQ(rc, expect) << err_.msg;
		if (rc != MFS_OK) {
			EXPECT_EQ(pw, nullptr);
			return "";
		}
		std::string s = pw;
		mfs_password_free(pw);
		return s;
	}

	std::string Msg() const
	{
		return err_.msg;
	}

	std::string dir_, home_, path_;
	struct mfs_account acct_ = {};
	struct mfs_err err_ = {};
	EnvGuard env_home_{"HOME"};
	EnvGuard env_cache_{"XDG_CACHE_HOME"};
	EnvGuard env_config_{"XDG_CONFIG_HOME"};
};

// --- parsing: keys and defaults ---

TEST_F(ConfigTest, SpecExample)
{
	ASSERT_EQ(Load("[work]\n"
		       "imap = imaps://imap.example.com          # "
		       "imap://host:143 means STARTTLS, required\n"
		       "# pop3 = pop3s://pop.example.com         # an account "
		       "has imap or pop3, not both\n"
		       "user = alice@example.com\n"
		       "password_command = pass show mail/work   # or "
		       "password_file = PATH (must be mode 0600)\n"
		       "smtp = smtps://smtp.example.com:465      # "
		       "smtp://host:587 means STARTTLS, required\n"
		       "from = Alice <alice@example.com>         # default "
		       "envelope sender\n"
		       "sent_folder = Sent                       # default: "
		       "the folder with SPECIAL-USE \\Sent\n"
		       "ca_file = /etc/ssl/my-ca.pem             # extra trust "
		       "anchor (default: system store)\n"
		       "cache_dir = ~/.cache/mailfs/work\n"
		       "timeout = 30                             # seconds for "
		       "any one network wait\n",
		       "work"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_STREQ(acct_.name, "work");
	EXPECT_EQ(acct_.path, path_);
	EXPECT_EQ(acct_.store.proto, MFS_PROTO_IMAP);
	EXPECT_EQ(acct_.store.tls, MFS_TLS_IMPLICIT);
	EXPECT_STREQ(acct_.store.host, "imap.example.com");
	EXPECT_EQ(acct_.store.port, 993);
	EXPECT_STREQ(acct_.user, "alice@example.com");
	EXPECT_STREQ(acct_.password_command, "pass show mail/work");
	EXPECT_EQ(acct_.password_file, nullptr);
	ASSERT_TRUE(acct_.has_smtp);
	EXPECT_EQ(acct_.smtp.proto, MFS_PROTO_SMTP);
	EXPECT_EQ(acct_.smtp.tls, MFS_TLS_IMPLICIT);
	EXPECT_STREQ(acct_.smtp.host, "smtp.example.com");
	EXPECT_EQ(acct_.smtp.port, 465);
	EXPECT_STREQ(acct_.from, "Alice <alice@example.com>");
	EXPECT_STREQ(acct_.sent_folder, "Sent");
	EXPECT_STREQ(acct_.ca_file, "/etc/ssl/my-ca.pem");
	EXPECT_EQ(acct_.cache_dir, home_ + "/.cache/mailfs/work");
	EXPECT_EQ(acct_.timeout, 30);
	EXPECT_EQ(err_.code, MFS_OK);
}

TEST_F(ConfigTest, Defaults)
{
	ASSERT_EQ(Load(kMin), MFS_OK) << err_.msg;
	EXPECT_EQ(acct_.timeout, 30);
	EXPECT_EQ(acct_.cache_dir, home_ + "/.cache/mailfs/a");
	EXPECT_FALSE(acct_.has_smtp);
	EXPECT_EQ(acct_.smtp.host, nullptr);
	EXPECT_EQ(acct_.from, nullptr);
	EXPECT_EQ(acct_.sent_folder, nullptr);
	EXPECT_EQ(acct_.ca_file, nullptr);
	EXPECT_EQ(acct_.password_file, nullptr);
	EXPECT_STREQ(acct_.password_command, "echo x");
	EXPECT_STREQ(acct_.user, "u");
}

TEST_F(ConfigTest, DefaultCacheDirFollowsXdgCacheHome)
{
	setenv("XDG_CACHE_HOME", "/var/tmp/xc", 1);
	ASSERT_EQ(Load(kMin), MFS_OK) << err_.msg;
	EXPECT_STREQ(acct_.cache_dir, "/var/tmp/xc/mailfs/a");
	// A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
	setenv("XDG_CACHE_HOME", "rel", 1);
	ASSERT_EQ(Load(kMin), MFS_OK) << err_.msg;
	EXPECT_EQ(acct_.cache_dir, home_ + "/.cache/mailfs/a");
}

TEST_F(ConfigTest, NoHomeNoCacheDirIsAnError)
{
	unsetenv("HOME");
	ExpectError(kMin, 1, "cache_dir");
	ASSERT_EQ(Load(std::string(kMin) + "cache_dir = /c\n"), MFS_OK)
	    << err_.msg;
	EXPECT_STREQ(acct_.cache_dir, "/c");
}

TEST_F(ConfigTest, TildeExpansion)
{
	ASSERT_EQ(Load("[a]\nimap = imaps://h\nuser = u\n"
		       "password_file = ~/pw\n"
		       "ca_file = ~/ca.pem\n"
		       "cache_dir = ~\n"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_EQ(acct_.password_file, home_ + "/pw");
	EXPECT_EQ(acct_.ca_file, home_ + "/ca.pem");
	EXPECT_EQ(acct_.cache_dir, home_);
	EXPECT_EQ(acct_.password_command, nullptr);

	ASSERT_EQ(Load("[a]\nimap = imaps://h\nuser = u\n"
		       "password_file = /etc/pw\n"
		       "cache_dir = /var/cache/m\n"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_STREQ(acct_.password_file, "/etc/pw");
	EXPECT_STREQ(acct_.cache_dir, "/var/cache/m");
}

TEST_F(ConfigTest, Timeout)
{
	ASSERT_EQ(Load(std::string(kMin) + "timeout = 1\n"), MFS_OK);
	EXPECT_EQ(acct_.timeout, 1);
	ASSERT_EQ(Load(std::string(kMin) + "timeout = 3600\n"), MFS_OK);
	EXPECT_EQ(acct_.timeout, 3600);
	ASSERT_EQ(Load(std::string(kMin) + "timeout = 045\n"), MFS_OK);
	EXPECT_EQ(acct_.timeout, 45);
}

TEST_F(ConfigTest, OutboxRetryKeys)
{
	ASSERT_EQ(Load(std::string(kMin)), MFS_OK);
	EXPECT_EQ(acct_.retry_min, 60);
	EXPECT_EQ(acct_.retry_max, 3600);
	EXPECT_EQ(acct_.queue_lifetime, 7 * 86400);
	ASSERT_EQ(Load(std::string(kMin) + "retry_min = 2\nretry_max = 10\n"
					   "queue_lifetime = 600\n"),
		  MFS_OK);
	EXPECT_EQ(acct_.retry_min, 2);
	EXPECT_EQ(acct_.retry_max, 10);
	EXPECT_EQ(acct_.queue_lifetime, 600);
	EXPECT_EQ(acct_.refresh, 5);
	ASSERT_EQ(Load(std::string(kMin) + "refresh = 120\n"), MFS_OK);
	EXPECT_EQ(acct_.refresh, 120);
	EXPECT_EQ(Load(std::string(kMin) + "retry_min = 0\n"), MFS_E_CONFIG);
	EXPECT_NE(Msg().find("retry_min"), std::string::npos) << Msg();
	EXPECT_EQ(Load(std::string(kMin) + "queue_lifetime = 1d\n"),
		  MFS_E_CONFIG);
	EXPECT_NE(Msg().find("queue_lifetime"), std::string::npos) << Msg();
}

TEST_F(ConfigTest, AuthAndPop3AndCacheKeysDefaults)
{
	ASSERT_EQ(Load(kMin), MFS_OK) << err_.msg;
	EXPECT_EQ(acct_.auth, MFS_AUTH_PASSWORD);
	EXPECT_EQ(acct_.apop, 0);
	EXPECT_EQ(acct_.allow_expire, 0);
	EXPECT_EQ(acct_.cache_size, 1ULL << 30);
	EXPECT_EQ(acct_.connections, 4);
	EXPECT_EQ(acct_.compress, 1);
}

TEST_F(ConfigTest, AuthKey)
{
	ASSERT_EQ(Load(std::string(kMin) + "auth = xoauth2\n"), MFS_OK);
	EXPECT_EQ(acct_.auth, MFS_AUTH_XOAUTH2);
	ASSERT_EQ(Load(std::string(kMin) + "auth = OAuthBearer\n"), MFS_OK);
	EXPECT_EQ(acct_.auth, MFS_AUTH_OAUTHBEARER);
	ASSERT_EQ(Load(std::string(kMin) + "auth = password\n"), MFS_OK);
	EXPECT_EQ(acct_.auth, MFS_AUTH_PASSWORD);
}

TEST_F(ConfigTest, YesNoKeys)
{
	ASSERT_EQ(Load(std::string(kMin) + "apop = yes\nallow_expire = YES\n"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_EQ(acct_.apop, 1);
	EXPECT_EQ(acct_.allow_expire, 1);
	ASSERT_EQ(Load(std::string(kMin) + "apop = no\nallow_expire = no\n"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_EQ(acct_.apop, 0);
	EXPECT_EQ(acct_.allow_expire, 0);
	ASSERT_EQ(Load(std::string(kMin) + "compress = No\n"), MFS_OK)
	    << err_.msg;
	EXPECT_EQ(acct_.compress, 0);
	ASSERT_EQ(Load(std::string(kMin) + "compress = yes\n"), MFS_OK)
	    << err_.msg;
	EXPECT_EQ(acct_.compress, 1);
}

TEST_F(ConfigTest, CacheSize)
{
	const struct {
		const char *text;
		unsigned long long bytes;
	} cases[] = {
	    {"1048576", 1ULL << 20},  {"1024K", 1ULL << 20},
	    {"1M", 1ULL << 20},	      {"500m", 500ULL << 20},
	    {"2G", 2ULL << 30},	      {"3g", 3ULL << 30},
	    {"4096k", 4ULL << 20},    {"1073741824", 1ULL << 30},
	    {"16777216G", 1ULL << 54},
	};
	for (const auto &c : cases) {
		SCOPED_TRACE(c.text);
		ASSERT_EQ(Load(std::string(kMin) + "cache_size = " + c.text +
			       "\n"),
			  MFS_OK)
		    << err_.msg;
		EXPECT_EQ(acct_.cache_size, c.bytes);
	}
}

TEST_F(ConfigTest, Connections)
{
	ASSERT_EQ(Load(std::string(kMin) + "connections = 1\n"), MFS_OK);
	EXPECT_EQ(acct_.connections, 1);
	ASSERT_EQ(Load(std::string(kMin) + "connections = 16\n"), MFS_OK);
	EXPECT_EQ(acct_.connections, 16);
}

struct UrlCase {
	const char *key;
	const char *url;
	enum mfs_proto proto;
	enum mfs_tls_mode tls;
	const char *host;
	int port;
};

TEST_F(ConfigTest, EveryUrlForm)
{
	const UrlCase cases[] = {
	    {"imap", "imap://h.example", MFS_PROTO_IMAP, MFS_TLS_STARTTLS,
	     "h.example", 143},
	    {"imap", "imap://h.example:1143", MFS_PROTO_IMAP, MFS_TLS_STARTTLS,
	     "h.example", 1143},
	    {"imap", "imaps://h.example", MFS_PROTO_IMAP, MFS_TLS_IMPLICIT,
	     "h.example", 993},
	    {"imap", "imaps://h.example:10993", MFS_PROTO_IMAP,
	     MFS_TLS_IMPLICIT, "h.example", 10993},
	    {"imap", "IMAPS://H.example/", MFS_PROTO_IMAP, MFS_TLS_IMPLICIT,
	     "H.example", 993},
	    {"imap", "imaps://127.0.0.1:65535", MFS_PROTO_IMAP,
	     MFS_TLS_IMPLICIT, "127.0.0.1", 65535},
	    {"imap", "imaps://[::1]", MFS_PROTO_IMAP, MFS_TLS_IMPLICIT, "::1",
	     993},
	    {"imap", "imap://[2001:db8::5]:1", MFS_PROTO_IMAP, MFS_TLS_STARTTLS,
	     "2001:db8::5", 1},
	    {"imap", "imaps://[::1]:993/", MFS_PROTO_IMAP, MFS_TLS_IMPLICIT,
	     "::1", 993},
	    {"pop3", "pop3://p.example", MFS_PROTO_POP3, MFS_TLS_STARTTLS,
	     "p.example", 110},
	    {"pop3", "pop3://p.example:1110", MFS_PROTO_POP3, MFS_TLS_STARTTLS,
	     "p.example", 1110},
	    {"pop3", "pop3s://p.example", MFS_PROTO_POP3, MFS_TLS_IMPLICIT,
	     "p.example", 995},
	    {"pop3", "pop3s://p.example:2995/", MFS_PROTO_POP3,
	     MFS_TLS_IMPLICIT, "p.example", 2995},
	    {"pop3", "pop3s://[fe80::1]:995", MFS_PROTO_POP3, MFS_TLS_IMPLICIT,
	     "fe80::1", 995},
	};
	for (const UrlCase &c : cases) {
		SCOPED_TRACE(c.url);
		ASSERT_EQ(Load(std::string("[a]\n") + c.key + " = " + c.url +
			       "\nuser = u\npassword_command = x\n"),
			  MFS_OK)
		    << err_.msg;
		EXPECT_EQ(acct_.store.proto, c.proto);
		EXPECT_EQ(acct_.store.tls, c.tls);
		EXPECT_STREQ(acct_.store.host, c.host);
		EXPECT_EQ(acct_.store.port, c.port);
	}
}

TEST_F(ConfigTest, EverySmtpUrlForm)
{
	const UrlCase cases[] = {
	    {"smtp", "smtp://m.example", MFS_PROTO_SMTP, MFS_TLS_STARTTLS,
	     "m.example", 587},
	    {"smtp", "smtp://m.example:25", MFS_PROTO_SMTP, MFS_TLS_STARTTLS,
	     "m.example", 25},
	    {"smtp", "smtps://m.example", MFS_PROTO_SMTP, MFS_TLS_IMPLICIT,
	     "m.example", 465},
	    {"smtp", "smtps://m.example:4650/", MFS_PROTO_SMTP,
	     MFS_TLS_IMPLICIT, "m.example", 4650},
	    {"smtp", "smtp://[::1]:2525", MFS_PROTO_SMTP, MFS_TLS_STARTTLS,
	     "::1", 2525},
	};
	for (const UrlCase &c : cases) {
		SCOPED_TRACE(c.url);
		ASSERT_EQ(Load(std::string(kMin) + "smtp = " + c.url + "\n"),
			  MFS_OK)
		    << err_.msg;
		ASSERT_TRUE(acct_.has_smtp);
		EXPECT_EQ(acct_.smtp.proto, c.proto);
		EXPECT_EQ(acct_.smtp.tls, c.tls);
		EXPECT_STREQ(acct_.smtp.host, c.host);
		EXPECT_EQ(acct_.smtp.port, c.port);
	}
}

TEST_F(ConfigTest, TlsNoneMakesPlainSchemesPlain)
{
	ASSERT_EQ(Load("[a]\nimap = imap://h\nsmtp = smtp://m:25\nuser = u\n"
		       "password_command = x\ntls = none\n"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_EQ(acct_.store.tls, MFS_TLS_NONE);
	EXPECT_EQ(acct_.store.port, 143);
	EXPECT_EQ(acct_.smtp.tls, MFS_TLS_NONE);

	ASSERT_EQ(Load("[a]\npop3 = pop3://h\nuser = u\n"
		       "password_command = x\ntls = none\n"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_EQ(acct_.store.tls, MFS_TLS_NONE);

	ASSERT_EQ(Load("[a]\nimap = imap://h\nsmtp = smtp://m\nuser = u\n"
		       "password_command = x\ntls = required\n"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_EQ(acct_.store.tls, MFS_TLS_STARTTLS);
	EXPECT_EQ(acct_.smtp.tls, MFS_TLS_STARTTLS);
}

TEST_F(ConfigTest, TlsErrors)
{
	ExpectError("[a]\nimap = imaps://h\nuser = u\npassword_command = x\n"
		    "tls = none\n",
		    5, "tls = none");
	ExpectError("[a]\npop3 = pop3s://h\nuser = u\npassword_command = x\n"
		    "tls = none\n",
		    5, "pop3");
	ExpectError("[a]\nimap = imap://h\nsmtp = smtps://m\nuser = u\n"
		    "password_command = x\ntls = none\n",
		    6, "smtp");
	ExpectError(std::string(kMin) + "tls = off\n", 5, "tls");
	ExpectError(std::string(kMin) + "tls = starttls\n", 5, "tls");
}

// --- comments, whitespace, line ends ---

TEST_F(ConfigTest, CommentsAndWhitespace)
{
	ASSERT_EQ(Load("# leading comment\n"
		       "; another comment\n"
		       "\n"
		       "   \t\n"
		       "  [ a ]   # section comment\n"
		       "\timap\t=\timaps://h\t# tab comment\n"
		       "   ; indented comment\n"
		       "   # indented comment\n"
		       "user=u\n"
		       "from =   Alice   Smith  \n"
		       "sent_folder = a#b ;c\n"
		       "password_command = printf '%s\\n' x;true #cut\n"
		       "timeout = 7 # seven"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_STREQ(acct_.name, "a");
	EXPECT_STREQ(acct_.store.host, "h");
	EXPECT_STREQ(acct_.user, "u");
	EXPECT_STREQ(acct_.from, "Alice   Smith");
	EXPECT_STREQ(acct_.sent_folder, "a#b ;c");
	EXPECT_STREQ(acct_.password_command, "printf '%s\\n' x;true");
	EXPECT_EQ(acct_.timeout, 7);
}

TEST_F(ConfigTest, CrlfAndByteOrderMark)
{
	ASSERT_EQ(Load("\xef\xbb\xbf[a]\r\n"
		       "imap = imaps://h:994\r\n"
		       "# comment\r\n"
		       "\r\n"
		       "user = u\r\n"
		       "password_command = x   # c\r\n"),
		  MFS_OK)
	    << err_.msg;
	EXPECT_STREQ(acct_.store.host, "h");
	EXPECT_EQ(acct_.store.port, 994);
	EXPECT_STREQ(acct_.user, "u");
	EXPECT_STREQ(acct_.password_command, "x");
	// Line numbers still count CRLF lines.
	ExpectError("[a]\r\nimap = imaps://h\r\nbogus = 1\r\n", 3, "bogus");
}

// --- sections ---

TEST_F(ConfigTest, PicksTheRequestedSection)
{
	const std::string text = "[one]\n"
				 "imap = imaps://one.example\n"
				 "user = one\n"
				 "password_command = x\n"
				 "timeout = 5\n"
				 "\n"
				 "[two]\n"
				 "pop3 = pop3s://two.example\n"
				 "user = two\n"
				 "password_file = /pw\n";
	ASSERT_EQ(Load(text, "two"), MFS_OK) << err_.msg;
	EXPECT_STREQ(acct_.name, "two");
	EXPECT_EQ(acct_.store.proto, MFS_PROTO_POP3);
	EXPECT_STREQ(acct_.store.host, "two.example");
	EXPECT_STREQ(acct_.user, "two");
	EXPECT_EQ(acct_.password_command, nullptr);
	EXPECT_STREQ(acct_.password_file, "/pw");
	EXPECT_EQ(acct_.timeout, 30);
	ASSERT_EQ(Load(text, "one"), MFS_OK) << err_.msg;
	EXPECT_STREQ(acct_.store.host, "one.example");
	EXPECT_EQ(acct_.timeout, 5);
	ExpectError(text, 0, "no section [three]", "three");
	// Section names are matched exactly.
	ExpectError(text, 0, "no section", "One");
}

TEST_F(ConfigTest, OtherSectionsAreOnlyCheckedForSyntax)
{
	// Unknown keys and bad values elsewhere do not stop this account...
	const std::string good =
	    std::string(kMin) + "[b]\nfuture_key = 1\nimap = nonsense\n";
	ASSERT_EQ(Load(good), MFS_OK) << err_.msg;
	// ...but broken syntax anywhere does.
	ExpectError(std::string(kMin) + "[b]\nthis line has no equals\n", 6,
		    "expected");
	ExpectError(std::string(kMin) + "[b]\nx = 1\nx = 2\n", 7,
		    "duplicate key 'x'");
	ExpectError(std::string(kMin) + "[b\n", 5, "]");
}

// --- errors ---

struct ErrCase {
	std::string text;
	int line;
	const char *word;
};

TEST_F(ConfigTest, SyntaxErrors)
{
	const std::string head = "[a]\nimap = imaps://h\nuser = u\n";
	const ErrCase cases[] = {
	    {head + "pasword = x\n", 4, "unknown key 'pasword'"},
	    {head + "Password_command = x\n", 4, "unknown key"},
	    {head + "user = v\npassword_command = x\n", 4,
	     "duplicate key 'user' (first at line 3)"},
	    {"user = u\n" + std::string(kMin), 1, "outside any section"},
	    {"# c\n\nimap = imaps://h\n[a]\n", 3, "outside any section"},
	    {head + "password_command\n", 4, "expected 'key = value'"},
	    {head + "= x\n", 4, "missing key"},
	    {head + "pass word = x\n", 4, "bad key"},
	    {head + "[a\n", 4, "]"},
	    {head + "[a] b\n", 4, "after ']'"},
	    {head + "[]\n", 4, "section name"},
	    {head + "[x/y]\n", 4, "section name"},
	    {head + "[..]\n", 4, "section name"},
	    {std::string(kMin) + "[b]\n[a]\n", 6, "duplicate section [a]"},
	    {head + std::string("user2 = a\0b\n", 12), 4, "NUL"},
	};
	for (const ErrCase &c : cases)
		ExpectError(c.text, c.line, c.word);
}

TEST_F(ConfigTest, UrlErrors)
{
	const ErrCase cases[] = {
	    {"imap = imaps://alice@h", 2, "user info"},
	    {"imap = imaps://alice:pw@h:993", 2, "user info"},
	    {"imap = imaps://h/INBOX", 2, "path"},
	    {"imap = imaps://h:993/x/", 2, "path"},
	    {"imap = imaps://h//", 2, "path"},
	    {"imap = imaps://h?tls=1", 2, "query"},
	    {"imap = imaps://h#frag", 2, "fragment"},
	    {"imap = imaps://h:0", 2, "port"},
	    {"imap = imaps://h:65536", 2, "port"},
	    {"imap = imaps://h:99999999999999999999", 2, "port"},
	    {"imap = imaps://h:-1", 2, "port"},
	    {"imap = imaps://h:99a", 2, "port"},
	    {"imap = imaps://h:", 2, "port"},
	    {"imap = imaps://[::1]:", 2, "port"},
	    {"imap = imaps://[::1]x", 2, "]"},
	    {"imap = imaps://[::1", 2, "]"},
	    {"imap = imaps://[not:v6]", 2, "IPv6"},
	    {"imap = imaps://", 2, "host"},
	    {"imap = imaps://:993", 2, "host"},
	    {"imap = imaps://bad host", 2, "host"},
	    {"imap = imaps://h..example", 2, "host"},
	    {"imap = http://h", 2, "scheme 'http://'"},
	    {"imap = pop3s://h", 2, "imap:// or imaps://"},
	    {"imap = smtps://h", 2, "scheme"},
	    {"pop3 = imaps://h", 2, "pop3:// or pop3s://"},
	    {"imap = imap.example.com", 2, "not a URL"},
	    {"imap = ://h", 2, "not a URL"},
	};
	for (const ErrCase &c : cases)
		ExpectError("[a]\n" + c.text +
				"\nuser = u\npassword_command = x\n",
			    c.line, c.word);
	ExpectError(std::string(kMin) + "smtp = imaps://h\n", 5,
		    "smtp:// or smtps://");
	ExpectError(std::string(kMin) + "smtp = smtps://u@h\n", 5, "user info");
	ExpectError(std::string(kMin) + "smtp = smtp://h:70000\n", 5, "port");
}

TEST_F(ConfigTest, AccountErrors)
{
	const ErrCase cases[] = {
	    {"[x]\n[a]\nimap = imaps://h\npop3 = pop3s://h\nuser = u\n"
	     "password_command = x\n",
	     4, "both imap and pop3"},
	    {"[a]\npop3 = pop3s://h\nuser = u\nimap = imaps://h\n"
	     "password_command = x\n",
	     4, "both imap and pop3"},
	    {"[x]\n[a]\nuser = u\npassword_command = x\n", 2,
	     "neither imap nor pop3"},
	    {"[a]\nimap = imaps://h\nuser = u\n", 1, "no password source"},
	    {"[a]\nimap = imaps://h\nuser = u\npassword_command = x\n"
	     "password_file = /p\n",
	     5, "both password_command and password_file"},
	    {"[a]\nimap = imaps://h\npassword_command = x\n", 1, "no user"},
	    {"[a]\nimap = imaps://h\nuser =\npassword_command = x\n", 3,
	     "user: empty value"},
	    {"[a]\nimap = imaps://h\nuser = u\npassword_command = # x\n", 4,
	     "password_command: empty"},
	    {"[a]\nimap =\nuser = u\npassword_command = x\n", 2, "imap: empty"},
	};
	for (const ErrCase &c : cases)
		ExpectError(c.text, c.line, c.word);
}

TEST_F(ConfigTest, ValueErrors)
{
	const ErrCase cases[] = {
	    {"timeout = 0", 5, "timeout"},
	    {"timeout = 3601", 5, "timeout"},
	    {"timeout = 99999999999999999999999", 5, "timeout"},
	    {"timeout = -1", 5, "timeout"},
	    {"timeout = 10s", 5, "timeout"},
	    {"timeout = ten", 5, "timeout"},
	    {"timeout = 1.5", 5, "timeout"},
	    {"timeout =", 5, "timeout: empty"},
	    {"ca_file = certs/ca.pem", 5, "absolute path"},
	    {"ca_file = ~bob/ca.pem", 5, "~user"},
	    {"cache_dir = cache", 5, "cache_dir"},
	    {"auth = plain", 5, "auth"},
	    {"auth = oauth", 5, "auth"},
	    {"auth =", 5, "auth: empty"},
	    {"apop = 1", 5, "apop"},
	    {"apop = true", 5, "apop"},
	    {"allow_expire = maybe", 5, "allow_expire"},
	    {"compress = deflate", 5, "compress"},
	    {"cache_size = 1023K", 5, "cache_size"},
	    {"cache_size = 0", 5, "cache_size"},
	    {"cache_size = 1048575", 5, "cache_size"},
	    {"cache_size = 1T", 5, "cache_size"},
	    {"cache_size = 1MB", 5, "cache_size"},
	    {"cache_size = 1 M", 5, "cache_size"},
	    {"cache_size = -1G", 5, "cache_size"},
	    {"cache_size = M", 5, "cache_size"},
	    {"cache_size = 1.5G", 5, "cache_size"},
	    {"cache_size = 99999999999999999999", 5, "cache_size"},
	    {"cache_size = 17179869184G", 5, "cache_size"},
	    {"connections = 0", 5, "connections"},
	    {"connections = 17", 5, "connections"},
	    {"connections = -1", 5, "connections"},
	    {"connections = 4x", 5, "connections"},
	    {"connections = 99999999999999999999", 5, "connections"},
	};
	for (const ErrCase &c : cases)
		ExpectError(std::string(kMin) + c.text + "\n", c.line, c.word);
	ExpectError("[a]\nimap = imaps://h\nuser = u\npassword_file = pw\n", 4,
		    "password_file");
	unsetenv("HOME");
	ExpectError("[a]\nimap = imaps://h\nuser = u\ncache_dir = /c\n"
		    "password_file = ~/pw\n",
		    5, "HOME");
}

TEST_F(ConfigTest, CannotOpen)
{
	mfs_account a = {};
	std::string missing = dir_ + "/nope";
	ASSERT_EQ(mfs_config_load(missing.c_str(), "a", &a, &err_),
		  MFS_E_CONFIG);
	EXPECT_NE(Msg().find(missing), std::string::npos) << Msg();
	EXPECT_NE(Msg().find("cannot open"), std::string::npos) << Msg();
	EXPECT_EQ(a.name, nullptr);

	// A directory opens but cannot be read.
	ASSERT_EQ(mfs_config_load(dir_.c_str(), "a", &a, &err_), MFS_E_CONFIG);
	EXPECT_NE(Msg().find(dir_), std::string::npos) << Msg();
	EXPECT_EQ(a.name, nullptr);
}

TEST_F(ConfigTest, AccountFreeZeroes)
{
	mfs_account zero = {};
	mfs_account_free(&zero);
	EXPECT_EQ(zero.name, nullptr);
	ASSERT_EQ(Load(std::string(kMin) + "smtp = smtp://m\n"), MFS_OK);
	mfs_account_free(&acct_);
	EXPECT_EQ(acct_.name, nullptr);
	EXPECT_EQ(acct_.smtp.host, nullptr);
	EXPECT_EQ(acct_.has_smtp, 0);
	EXPECT_EQ(acct_.timeout, 0);
}

// --- mfs_config_default_path ---

TEST_F(ConfigTest, DefaultPath)
{
	char *p = mfs_config_default_path();
	ASSERT_NE(p, nullptr);
	EXPECT_EQ(std::string(p), home_ + "/.config/mailfs/config");
	free(p);

	setenv("XDG_CONFIG_HOME", "/etc/xdg-test", 1);
	p = mfs_config_default_path();
	ASSERT_NE(p, nullptr);
	EXPECT_STREQ(p, "/etc/xdg-test/mailfs/config");
	free(p);

	setenv("XDG_CONFIG_HOME", "", 1);
	p = mfs_config_default_path();
	ASSERT_NE(p, nullptr);
	EXPECT_EQ(std::string(p), home_ + "/.config/mailfs/config");
	free(p);

	unsetenv("HOME");
	unsetenv("XDG_CONFIG_HOME");
	EXPECT_EQ(mfs_config_default_path(), nullptr);
	setenv("XDG_CONFIG_HOME", "/x", 1);
	p = mfs_config_default_path();
	EXPECT_STREQ(p, "/x/mailfs/config");
	free(p);
}

// --- password_command ---

TEST_F(ConfigTest, CommandFirstLine)
{
	LoadCommand("printf 's3cret pw\\r\\nsecond line\\n'");
	EXPECT_EQ(Password(), "s3cret pw");
	LoadCommand("printf nonewline");
	EXPECT_EQ(Password(), "nonewline");
	mfs_password_free(nullptr);
}

TEST_F(ConfigTest, CommandLongOutputIsDrained)
{
	// Without reading to the end the shell would die of SIGPIPE.
	LoadCommand("echo pw; head -c 1000000 /dev/zero");
	EXPECT_EQ(Password(), "pw");
}

TEST_F(ConfigTest, CommandNonZeroExit)
{
	LoadCommand("echo s3cret-XYZ; exit 3");
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("status 3"), std::string::npos) << Msg();
	EXPECT_NE(Msg().find(path_), std::string::npos) << Msg();
	EXPECT_EQ(Msg().find("s3cret"), std::string::npos) << Msg();

	LoadCommand("/nonexistent/mailfs-pw");
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("127"), std::string::npos) << Msg();

	LoadCommand("kill -9 $$");
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("signal 9"), std::string::npos) << Msg();
}

TEST_F(ConfigTest, CommandTimeout)
{
	LoadCommand("sleep 5", 1);
	double t0 = now_s();
	Password(MFS_E_CONFIG);
	double took = now_s() - t0;
	EXPECT_NE(Msg().find("timed out"), std::string::npos) << Msg();
	EXPECT_GE(took, 0.9);
	EXPECT_LT(took, 3.0);
}

TEST_F(ConfigTest, CommandTimeoutAfterClosingStdout)
{
	// Output ends early but the process lingers: still bounded.
	LoadCommand("echo pw; exec >&-; sleep 5", 1);
	double t0 = now_s();
	Password(MFS_E_CONFIG);
	double took = now_s() - t0;
	EXPECT_NE(Msg().find("timed out"), std::string::npos) << Msg();
	EXPECT_LT(took, 3.0);
}

TEST_F(ConfigTest, CommandEmptyOutput)
{
	LoadCommand("true");
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("empty"), std::string::npos) << Msg();
	LoadCommand("printf '\\r\\nsecond\\n'");
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("empty"), std::string::npos) << Msg();
}

TEST_F(ConfigTest, CommandLineTooLong)
{
	LoadCommand("head -c 5000 /dev/zero | tr '\\0' a");
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("longer"), std::string::npos) << Msg();
}

TEST_F(ConfigTest, CommandInheritsNoExtraFd)
{
	std::string f = Write("open-file", "x");
	int fd = open(f.c_str(), O_RDONLY); // deliberately without O_CLOEXEC
	ASSERT_GE(fd, 3);
	std::string probe = "/proc/self/fd/" + std::to_string(fd);
	// The probe works: the fd is visible here, and in a plain child.
	ASSERT_EQ(access(probe.c_str(), F_OK), 0);
	ASSERT_EQ(system(("[ -e " + probe + " ]").c_str()), 0);

	LoadCommand("[ -e " + probe + " ] && exit 7; echo pw");
	EXPECT_EQ(Password(), "pw");
	close(fd);
}

TEST_F(ConfigTest, CommandStdinIsDevNull)
{
	LoadCommand("[ \"$(readlink /proc/self/fd/0)\" = /dev/null ] || exit 8;"
		    " echo pw");
	EXPECT_EQ(Password(), "pw");
}

// A value without shell metacharacters runs without /bin/sh: the script
// reports its parent's name, which is the test itself, not "sh".
TEST_F(ConfigTest, CommandWithoutMetacharactersRunsWithoutShell)
{
	std::string script =
	    Write("print-parent",
		  "#!/bin/sh\n"
		  "ps -o comm= -p $PPID | tr -d ' '\n",
		  0700);
	std::string self;
	{
		std::ifstream comm("/proc/self/comm");
		std::getline(comm, self);
	}
	LoadCommand(script);
	EXPECT_EQ(Password(), self);
	EXPECT_NE(self, "sh");
	// Words are split on blanks and passed as they are.
	std::string args = Write("print-args",
				 "#!/bin/sh\n"
				 "printf '%s|' \"$#\" \"$@\"; echo\n",
				 0700);
	LoadCommand(args + "  one\ttwo  three");
	EXPECT_EQ(Password(), "3|one|two|three|");
	// Found through PATH, as a shell would.
	LoadCommand("printf direct");
	EXPECT_EQ(Password(), "direct");
	LoadCommand("mailfs-no-such-command-xyz arg");
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("127"), std::string::npos) << Msg();
}

TEST_F(ConfigTest, CommandWithMetacharactersRunsThroughShell)
{
	std::string script =
	    Write("print-parent",
		  "#!/bin/sh\n"
		  "ps -o comm= -p $PPID | tr -d ' '\n",
		  0700);
	LoadCommand("echo a | tr a b");
	EXPECT_EQ(Password(), "b");
	// Each metacharacter alone is enough to get a shell as the parent.
	const char *const uses[] = {
	    " | cat", " && true", "; true", " < /dev/null", " 2> /dev/null",
	    " $HOME", " `true`", " a\\b", " \"a\"", " 'a'", " a*", " a?",
	    " a[", " a]", " a#b", " ~", " a=b", " 50%", " {", " }"};
	for (const char *u : uses) {
		SCOPED_TRACE(u);
		LoadCommand(script + u);
		EXPECT_EQ(Password(), "sh");
	}
	LoadCommand("(" + script + ")");
	EXPECT_EQ(Password(), "sh");
}

// --- password_file ---

TEST_F(ConfigTest, PasswordFile0600)
{
	std::string f = Write("pw", "s3cret\r\nsecond\n", 0600);
	LoadFile(f);
	EXPECT_EQ(Password(), "s3cret");
	Write("pw", "nonewline", 0600);
	EXPECT_EQ(Password(), "nonewline");
	Write("pw", "", 0600);
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("empty"), std::string::npos) << Msg();
	Write("pw", "\n", 0400);
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("empty"), std::string::npos) << Msg();
}

TEST_F(ConfigTest, PasswordFileTildeExpanded)
{
	std::string f = home_ + "/pw";
	std::ofstream(f) << "homepw\n";
	chmod(f.c_str(), 0600);
	LoadFile("~/pw");
	EXPECT_EQ(Password(), "homepw");
}

TEST_F(ConfigTest, PasswordFileReadableByOthersRefused)
{
	for (mode_t mode : {0644, 0640, 0604, 0610, 0601}) {
		SCOPED_TRACE(mode);
		std::string f = Write("pw", "s3cret-XYZ\n", mode);
		LoadFile(f);
		Password(MFS_E_CONFIG);
		EXPECT_NE(Msg().find("chmod 600 " + f), std::string::npos)
		    << Msg();
		EXPECT_EQ(Msg().find("s3cret"), std::string::npos) << Msg();
	}
}

TEST_F(ConfigTest, PasswordFileSymlinkRefused)
{
	std::string f = Write("pw", "s3cret\n", 0600);
	std::string l = dir_ + "/link";
	ASSERT_EQ(symlink(f.c_str(), l.c_str()), 0);
	LoadFile(l);
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("symbolic link"), std::string::npos) << Msg();
	EXPECT_NE(Msg().find(l), std::string::npos) << Msg();
}

TEST_F(ConfigTest, PasswordFileMissingRefused)
{
	std::string f = dir_ + "/missing";
	LoadFile(f);
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find(f), std::string::npos) << Msg();
	EXPECT_NE(Msg().find("No such file"), std::string::npos) << Msg();
}

TEST_F(ConfigTest, PasswordFileNotRegularRefused)
{
	LoadFile(dir_);
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("not a regular file"), std::string::npos) << Msg();

	// A FIFO must be refused without blocking on open.
	std::string fifo = dir_ + "/fifo";
	ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
	LoadFile(fifo);
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("not a regular file"), std::string::npos) << Msg();
}

TEST_F(ConfigTest, PasswordFileOtherOwnerRefused)
{
	if (geteuid() != 0)
		GTEST_SKIP() << "needs root to give a file away";
	std::string f = Write("pw", "s3cret\n", 0600);
	ASSERT_EQ(chown(f.c_str(), 65534, 65534), 0);
	LoadFile(f);
	Password(MFS_E_CONFIG);
	EXPECT_NE(Msg().find("owned by uid 65534"), std::string::npos) << Msg();
}

} // namespace

// password_command runs a command as the user: a config file that someone
// else may write is refused when it holds one, naming file and line.
TEST_F(ConfigTest, CommandInAFileOthersMayWriteIsRefused)
{
	const std::string cmd = "[a]\nimap = imaps://h\nuser = u\n"
				"password_command = echo x\n";
	const std::string file = "[a]\nimap = imaps://h\nuser = u\n"
				 "password_file = /p\n";

	for (mode_t m : {0664, 0646, 0666}) {
		SCOPED_TRACE(m);
		Write("config", cmd, m);
		mfs_account_free(&acct_);
		ASSERT_EQ(mfs_config_load(path_.c_str(), "a", &acct_, &err_),
			  MFS_E_CONFIG);
		EXPECT_EQ(Msg().rfind(path_ + ":4:", 0), 0u) << Msg();
		EXPECT_NE(Msg().find("chmod go-w"), std::string::npos) << Msg();
		EXPECT_EQ(acct_.name, nullptr);
		// without a command the file's mode is not this check's concern
		Write("config", file, m);
		ASSERT_EQ(mfs_config_load(path_.c_str(), "a", &acct_, &err_),
			  MFS_OK)
		    << Msg();
	}
	Write("config", cmd, 0644);
	mfs_account_free(&acct_);
	ASSERT_EQ(mfs_config_load(path_.c_str(), "a", &acct_, &err_), MFS_OK)
	    << Msg();
	if (chown(path_.c_str(), 65534, 65534) != 0)
		GTEST_SKIP() << "cannot chown (not root)";
	mfs_account_free(&acct_);
	ASSERT_EQ(mfs_config_load(path_.c_str(), "a", &acct_, &err_),
		  MFS_E_CONFIG);
	EXPECT_NE(Msg().find("owned by uid 65534"), std::string::npos) << Msg();
}
