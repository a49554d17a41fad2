// mail_servers.h - for the unit tests that talk to the real local
// servers: starts tests/servers/mailservers.sh once for the test program
// (a GoogleTest environment), reads its env file, stops it at the end, and
// reads back delivered mail through tests/unit/smtp_fetch.py.
#ifndef MAILFS_TEST_MAIL_SERVERS_H
#define MAILFS_TEST_MAIL_SERVERS_H

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace
{

std::map<std::string, std::string> env;
std::string srvdir;

std::string slurp(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

class Servers : public ::testing::Environment
{
	const char *name;

      public:
	explicit Servers(const char *test_name) : name(test_name)
	{
	}
	void SetUp() override
	{
		std::string tmpl = std::string("/tmp/") + name + ".XXXXXX";
		const char *top = mkdtemp(&tmpl[0]);
		// the servers drop privileges and must reach their directory
		chmod(top, 0755);
		srvdir = std::string(top) + "/srv";
		// a free port drawn may be taken by another test run before
		// the server binds it: a second try draws new ports
		int started = 0;
		for (int attempt = 0; attempt < 3 && !started; attempt++) {
			std::string cmd = "tests/servers/mailservers.sh start " +
					  srvdir + " >" + srvdir + ".log 2>&1";
			if (attempt > 0)
				system(("tests/servers/mailservers.sh stop " +
					srvdir + " >/dev/null 2>&1; rm -rf " +
					srvdir)
					   .c_str());
			started = system(cmd.c_str()) == 0;
		}
		if (!started) {
			fprintf(stderr, "mail servers did not start, see %s.log\n",
				srvdir.c_str());
			return;
		}
		std::ifstream in(srvdir + "/env");
		std::string line;
		while (std::getline(in, line)) {
			size_t eq = line.find('=');
			if (eq != std::string::npos)
				env[line.substr(0, eq)] = line.substr(eq + 1);
		}
	}
	void TearDown() override
	{
		if (!srvdir.empty())
			system(("tests/servers/mailservers.sh stop " + srvdir +
				" >/dev/null 2>&1")
				       .c_str());
	}
};

// Messages that arrived for user 1 (alice) or 2 (bob) with X-Test-Id token.
std::vector<std::string> fetch(int user, const std::string &token,
			       int expect, int wait = 30)
{
	std::string out = srvdir + ".fetch." + token;
	std::string cmd = "/usr/bin/python3 tests/unit/smtp_fetch.py " +
			  srvdir + "/env " + std::to_string(user) + " " +
			  token + " " + std::to_string(expect) + " " + out +
			  " " + std::to_string(wait) + " >" + out + ".n";
	std::vector<std::string> msgs;

	if (system(cmd.c_str()) != 0)
		return msgs;
	int n = atoi(slurp(out + ".n").c_str());
	for (int i = 0; i < n; i++)
		msgs.push_back(slurp(out + "/" + std::to_string(i) + ".eml"));
	return msgs;
}

} // namespace

#endif
