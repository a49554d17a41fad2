// A mail store in memory (struct mfs_store_ops of src/store.h) for unit
// tests of the layers above the drivers: folders, messages with their raw
// bytes, UIDs and UIDVALIDITY, flags; every op counted, its arguments
// recorded, and errors injected on demand ("the next index fails with
// MFS_E_CONNECT").
//
// Header only: the unit test rule of the Makefile compiles one source per
// test. Every op takes the store's lock, so the FUSE layer may call it from
// several threads at once, as it calls a driver.
#ifndef MAILFS_TESTS_FAKE_STORE_H
#define MAILFS_TESTS_FAKE_STORE_H

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

extern "C" {
#include "error.h"
#include "store.h"
}

class FakeStore
{
      public:
	struct Msg {
		uint32_t uid = 0;
		std::string raw;
		time_t date = 0;
		std::string from, subject;
		unsigned flags = 0;
	};
	struct Folder {
		std::string name;
		char delim = '/';
		bool noselect = false, sent = false;
		uint32_t validity = 1, uidnext = 1;
		std::vector<Msg> msgs;
	};
	struct Append {
		std::string folder, bytes;
		time_t date;
		unsigned flags;
	};
	struct Move {
		std::string from;
		uint32_t validity, uid;
		std::string to;
	};
	struct Expunge {
		std::string folder;
		uint32_t validity, uid;
	};
	struct Store {
		std::string folder;
		uint32_t uid;
		char how;
		std::vector<std::string> flags;
	};

	/* keeps: the store has a kept_index op (listings kept on disk, as
	 * the IMAP driver keeps them) */
	explicit FakeStore(bool keeps = false)
	{
		st.ops = keeps ? &ops_keeping_ : &ops_;
		st.priv = this;
		st.read_only = 0;
	}
	FakeStore(const FakeStore &) = delete;
	FakeStore &operator=(const FakeStore &) = delete;

	/* The store to give to the layer under test. */
	struct mfs_store st;

	/* --- setting it up (also while mounted: the next listing shows it) */

	Folder &folder(const std::string &name, uint32_t validity = 1)
	{
		std::lock_guard<std::mutex> g(mu);
		Folder &f = folders[name];
		if (f.name.empty()) {
			f.name = name;
			f.validity = validity;
		}
		return f;
	}
	/* Adds a message; returns its UID. */
	uint32_t add(const std::string &folder_name, const std::string &raw,
		     time_t date, const std::string &from,
		     const std::string &subject, unsigned flags = 0)
	{
		Folder &f = folder(folder_name);
		std::lock_guard<std::mutex> g(mu);
		Msg m;
		m.uid = f.uidnext++;
		m.raw = raw;
		m.date = date;
		m.from = from;
		m.subject = subject;
		m.flags = flags;
		f.msgs.push_back(m);
		return m.uid;
	}
	/* The next `times` calls of op ("index", "fetch", ..., or "*" for
	 * any op) fail with code; times < 0: every call from now on. */
	void fail(const std::string &op, enum mfs_errcode code, int times = 1)
	{
		std::lock_guard<std::mutex> g(mu);
		failures[op] = {code, times};
	}
	void heal()
	{
		std::lock_guard<std::mutex> g(mu);
		failures.clear();
	}
	/* The next `times` calls of op that succeed lose their answer: the
	 * change is made, but the call fails with MFS_E_TIMEOUT (a
	 * connection that broke before the server's answer came). */
	void lose_answer(const std::string &op, int times = 1)
	{
		std::lock_guard<std::mutex> g(mu);
		lost[op] = times;
	}
	int count(const std::string &op)
	{
		std::lock_guard<std::mutex> g(mu);
		auto it = calls.find(op);
		return it == calls.end() ? 0 : it->second;
	}
	void reset_counts()
	{
		std::lock_guard<std::mutex> g(mu);
		calls.clear();
	}
	bool has_folder(const std::string &name)
	{
		std::lock_guard<std::mutex> g(mu);
		return folders.count(name) != 0;
	}
	std::vector<uint32_t> uids(const std::string &name)
	{
		std::lock_guard<std::mutex> g(mu);
		std::vector<uint32_t> v;
		auto it = folders.find(name);
		if (it != folders.end())
			for (auto &m : it->second.msgs)
				v.push_back(m.uid);
		return v;
	}
	unsigned flags_of(const std::string &name, uint32_t uid)
	{
		std::lock_guard<std::mutex> g(mu);
		Msg *m = find(name, uid);
		return m ? m->flags : 0;
	}

	/* Everything below is guarded by mu. */
	std::mutex mu;
	std::map<std::string, Folder> folders;
	std::map<std::string, int> calls;
	std::map<std::string, std::pair<enum mfs_errcode, int>> failures;
	std::map<std::string, int> lost;
	std::vector<Append> appends;
	std::vector<Move> moves;
	std::vector<Expunge> expunges;
	std::vector<Store> stores;
	std::vector<std::string> creates, removes;
	std::vector<std::pair<std::string, std::string>> renames;
	std::vector<std::vector<uint32_t>> fetch_batches; /* fetch_many */

      private:
	static FakeStore *of(struct mfs_store *s)
	{
		return static_cast<FakeStore *>(s->priv);
	}
	/* Counts op; sets err and returns its code when a failure is due. */
	int enter(const char *op, struct mfs_err *err)
	{
		calls[op]++;
		for (const char *key : {op, "*"}) {
			auto it = failures.find(key);
			if (it == failures.end() || it->second.second == 0)
				continue;
			enum mfs_errcode code = it->second.first;
			if (it->second.second > 0)
				it->second.second--;
			return mfs_err_set(err, code, "fake store: %s fails (%d)",
					   op, (int)code);
		}
		mfs_err_clear(err);
		return MFS_OK;
	}
	/* rc, or MFS_E_TIMEOUT when op's answer is to be lost. */
	int leave(const char *op, int rc, struct mfs_err *err)
	{
		auto it = lost.find(op);
		if (rc != MFS_OK || it == lost.end() || it->second == 0)
			return rc;
		it->second--;
		return mfs_err_set(err, MFS_E_TIMEOUT,
				   "fake store: %s done, its answer lost", op);
	}
	Msg *find(const std::string &folder_name, uint32_t uid,
		  uint32_t validity = 0)
	{
		auto it = folders.find(folder_name);
		if (it == folders.end() ||
		    (validity != 0 && it->second.validity != validity))
			return nullptr;
		for (auto &m : it->second.msgs)
			if (m.uid == uid)
				return &m;
		return nullptr;
	}
	static int write_all(int fd, const std::string &s)
	{
		size_t off = 0;
		while (off < s.size()) {
			ssize_t w = write(fd, s.data() + off, s.size() - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return -1;
			off += (size_t)w;
		}
		return 0;
	}
	static std::string header(const std::string &raw, const char *name)
	{
		std::string key = std::string("\n") + name + ": ";
		std::string text = "\n" + raw;
		size_t end = text.find("\r\n\r\n");
		size_t at = text.find(key);
		if (at == std::string::npos || (end != std::string::npos && at > end))
			return "";
		at += key.size();
		size_t eol = text.find_first_of("\r\n", at);
		return text.substr(at, eol == std::string::npos ? std::string::npos
							 : eol - at);
	}
	static unsigned flag_bit(const std::string &name)
	{
		static const std::map<std::string, unsigned> bits = {
		    {"\\Seen", MFS_FLAG_SEEN},
		    {"\\Answered", MFS_FLAG_ANSWERED},
		    {"\\Flagged", MFS_FLAG_FLAGGED},
		    {"\\Deleted", MFS_FLAG_DELETED},
		    {"\\Draft", MFS_FLAG_DRAFT}};
		auto it = bits.find(name);
		return it == bits.end() ? 0 : it->second;
	}

	static int op_connect(struct mfs_store *s, struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		return f->enter("connect", err);
	}
	static int op_list(struct mfs_store *s, struct mfs_store_folder **out,
			   size_t *n, struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		*out = nullptr;
		*n = 0;
		if (f->enter("list", err) != MFS_OK)
			return err->code;
		auto *v = static_cast<struct mfs_store_folder *>(
		    calloc(f->folders.size() + 1, sizeof(**out)));
		if (v == nullptr)
			return mfs_err_set(err, MFS_E_NOMEM, "no memory");
		size_t i = 0;
		for (auto &kv : f->folders) {
			v[i].name = strdup(kv.first.c_str());
			v[i].delim = kv.second.delim;
			v[i].noselect = kv.second.noselect;
			v[i].sent = kv.second.sent;
			i++;
		}
		*out = v;
		*n = i;
		return MFS_OK;
	}
	static int op_index(struct mfs_store *s, const char *folder,
			    uint32_t *validity, struct mfs_store_msg **msgs,
			    size_t *n, struct mfs_err *err)
	{
		return listing(of(s), "index", folder, validity, msgs, n, err);
	}
	/* What a driver keeps on disk (FakeStore(true) only): here the
	 * listing as it stands; failures are injected as "kept_index". */
	static int op_kept_index(struct mfs_store *s, const char *folder,
				 uint32_t *validity, struct mfs_store_msg **msgs,
				 size_t *n, struct mfs_err *err)
	{
		return listing(of(s), "kept_index", folder, validity, msgs, n,
			       err);
	}
	static int listing(FakeStore *f, const char *op, const char *folder,
			   uint32_t *validity, struct mfs_store_msg **msgs,
			   size_t *n, struct mfs_err *err)
	{
		std::lock_guard<std::mutex> g(f->mu);
		*msgs = nullptr;
		*n = 0;
		if (f->enter(op, err) != MFS_OK)
			return err->code;
		auto it = f->folders.find(folder);
		if (it == f->folders.end())
			return mfs_err_set(err, MFS_E_NOENT, "no folder %s",
					   folder);
		const Folder &fo = it->second;
		auto *v = static_cast<struct mfs_store_msg *>(
		    calloc(fo.msgs.size() + 1, sizeof(**msgs)));
		if (v == nullptr)
			return mfs_err_set(err, MFS_E_NOMEM, "no memory");
		for (size_t i = 0; i < fo.msgs.size(); i++) {
			const Msg &m = fo.msgs[i];
			v[i].uid = m.uid;
			v[i].size = m.raw.size();
			v[i].date = m.date;
			v[i].from = strdup(m.from.c_str());
			v[i].subject = strdup(m.subject.c_str());
			v[i].flags = m.flags;
		}
		*validity = fo.validity;
		*msgs = v;
		*n = fo.msgs.size();
		return MFS_OK;
	}
	static int op_fetch(struct mfs_store *s, const char *folder,
			    uint32_t validity, const struct mfs_store_msg *msg,
			    int fd, size_t *len, struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("fetch", err) != MFS_OK)
			return err->code;
		Msg *m = f->find(folder, msg->uid, validity);
		if (m == nullptr)
			return mfs_err_set(err, MFS_E_NOENT, "no message %u",
					   msg->uid);
		if (write_all(fd, m->raw) != 0)
			return mfs_err_set(err, MFS_E_IO, "write: %s",
					   strerror(errno));
		*len = m->raw.size();
		return MFS_OK;
	}
	static int op_fetch_many(struct mfs_store *s, const char *folder,
				 uint32_t validity, const uint32_t *uids,
				 size_t n, int (*open_fn)(void *ctx),
				 void (*done_fn)(void *ctx, uint32_t uid,
						 int fd, size_t len),
				 void *ctx, struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("fetch_many", err) != MFS_OK)
			return err->code;
		f->fetch_batches.emplace_back(uids, uids + n);
		for (size_t i = 0; i < n; i++) {
			Msg *m = f->find(folder, uids[i], validity);
			if (m == nullptr)
				continue; /* gone: skipped */
			int fd = open_fn(ctx);
			if (fd < 0)
				return mfs_err_set(err, MFS_E_IO, "no file");
			write_all(fd, m->raw);
			done_fn(ctx, uids[i], fd, m->raw.size());
		}
		return MFS_OK;
	}
	static int op_fetch_section(struct mfs_store *s, const char *folder,
				    uint32_t validity,
				    const struct mfs_store_msg *msg,
				    const char *section, int fd, size_t *len,
				    struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("fetch_section", err) != MFS_OK)
			return err->code;
		Msg *m = f->find(folder, msg->uid, validity);
		if (m == nullptr)
			return mfs_err_set(err, MFS_E_NOENT, "no message");
		if (section[0] != '\0') /* no skeletons here: never asked */
			return mfs_err_set(err, MFS_E_PROTO,
					   "fake store: section %s", section);
		if (write_all(fd, m->raw) != 0)
			return mfs_err_set(err, MFS_E_IO, "write");
		*len = m->raw.size();
		return MFS_OK;
	}
	static int op_create(struct mfs_store *s, const char *folder,
			     struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("create", err) != MFS_OK)
			return err->code;
		f->creates.push_back(folder);
		if (f->folders.count(folder))
			return mfs_err_set(err, MFS_E_EXIST, "exists");
		f->folders[folder].name = folder;
		return MFS_OK;
	}
	static int op_remove(struct mfs_store *s, const char *folder,
			     struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("remove", err) != MFS_OK)
			return err->code;
		f->removes.push_back(folder);
		auto it = f->folders.find(folder);
		if (it == f->folders.end())
			return mfs_err_set(err, MFS_E_NOENT, "no folder");
		if (strcmp(folder, "INBOX") == 0)
			return mfs_err_set(err, MFS_E_ACCESS, "INBOX stays");
		if (!it->second.msgs.empty())
			return mfs_err_set(err, MFS_E_NOTEMPTY, "not empty");
		f->folders.erase(it);
		return MFS_OK;
	}
	static int op_rename(struct mfs_store *s, const char *from,
			     const char *to, struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("rename", err) != MFS_OK)
			return err->code;
		f->renames.emplace_back(from, to);
		if (!f->folders.count(from))
			return mfs_err_set(err, MFS_E_NOENT, "no folder");
		if (f->folders.count(to))
			return mfs_err_set(err, MFS_E_EXIST, "exists");
		/* the folder and those below it */
		std::string prefix = std::string(from) + "/";
		std::map<std::string, Folder> next;
		for (auto &kv : f->folders) {
			std::string name = kv.first;
			if (name == from)
				name = to;
			else if (name.compare(0, prefix.size(), prefix) == 0)
				name = std::string(to) + "/" +
				       name.substr(prefix.size());
			kv.second.name = name;
			next[name] = kv.second;
		}
		f->folders.swap(next);
		return MFS_OK;
	}
	static int op_append(struct mfs_store *s, const char *folder, int fd,
			     uint64_t len, time_t date, unsigned flags,
			     uint32_t *validity, uint32_t *uid,
			     struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("append", err) != MFS_OK)
			return err->code;
		std::string bytes(len, '\0');
		size_t got = 0;
		while (got < len) {
			ssize_t r = pread(fd, &bytes[got], len - got, (off_t)got);
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		bytes.resize(got);
		f->appends.push_back({folder, bytes, date, flags});
		if (got != len)
			return mfs_err_set(err, MFS_E_IO, "short read");
		auto it = f->folders.find(folder);
		if (it == f->folders.end())
			return mfs_err_set(err, MFS_E_NOENT, "no folder");
		Msg m;
		m.uid = it->second.uidnext++;
		m.raw = bytes;
		m.date = date != 0 ? date : 1700000000;
		m.from = header(bytes, "From");
		m.subject = header(bytes, "Subject");
		m.flags = flags;
		it->second.msgs.push_back(m);
		*validity = it->second.validity;
		*uid = m.uid;
		return f->leave("append", MFS_OK, err);
	}
	static int op_move(struct mfs_store *s, const char *from,
			   uint32_t validity, uint32_t uid, const char *to,
			   struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("move", err) != MFS_OK)
			return err->code;
		f->moves.push_back({from, validity, uid, to});
		Msg *m = f->find(from, uid, validity);
		auto dst = f->folders.find(to);
		if (m == nullptr || dst == f->folders.end())
			return mfs_err_set(err, MFS_E_NOENT, "no message");
		Msg moved = *m;
		moved.uid = dst->second.uidnext++;
		dst->second.msgs.push_back(moved);
		auto &src = f->folders[from].msgs;
		for (auto it = src.begin(); it != src.end(); ++it)
			if (it->uid == uid) {
				src.erase(it);
				break;
			}
		return f->leave("move", MFS_OK, err);
	}
	static int op_expunge(struct mfs_store *s, const char *folder,
			      uint32_t validity, uint32_t uid,
			      struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("expunge", err) != MFS_OK)
			return err->code;
		f->expunges.push_back({folder, validity, uid});
		if (f->find(folder, uid, validity) == nullptr)
			return mfs_err_set(err, MFS_E_NOENT, "no message");
		auto &v = f->folders[folder].msgs;
		for (auto it = v.begin(); it != v.end(); ++it)
			if (it->uid == uid) {
				v.erase(it);
				break;
			}
		return MFS_OK;
	}
	static int op_store_flags(struct mfs_store *s, const char *folder,
				  uint32_t validity, uint32_t uid, char how,
				  const char *const *flags, size_t n,
				  unsigned *now, struct mfs_err *err)
	{
		FakeStore *f = of(s);
		std::lock_guard<std::mutex> g(f->mu);
		if (f->enter("store_flags", err) != MFS_OK)
			return err->code;
		Store rec{folder, uid, how, {}};
		unsigned bits = 0;
		for (size_t i = 0; i < n; i++) {
			rec.flags.push_back(flags[i]);
			bits |= flag_bit(flags[i]);
		}
		f->stores.push_back(rec);
		Msg *m = f->find(folder, uid, validity);
		if (m == nullptr)
			return mfs_err_set(err, MFS_E_NOENT, "no message");
		if (how == '+')
			m->flags |= bits;
		else if (how == '-')
			m->flags &= ~bits;
		else
			m->flags = bits;
		*now = m->flags;
		return MFS_OK;
	}
	static void op_tls_info(struct mfs_store *, char *version, size_t vlen,
				char *subject, size_t slen, char *issuer,
				size_t ilen)
	{
		if (vlen > 0)
			version[0] = '\0';
		if (slen > 0)
			subject[0] = '\0';
		if (ilen > 0)
			issuer[0] = '\0';
	}
	static void op_free(struct mfs_store *)
	{
		/* the test owns the fake */
	}

	/* by name, so that an op added to store.h needs no change here */
	static struct mfs_store_ops make_ops()
	{
		struct mfs_store_ops o = {};

		o.connect = op_connect;
		o.list = op_list;
		o.index = op_index;
		o.fetch = op_fetch;
		o.fetch_many = op_fetch_many;
		o.fetch_section = op_fetch_section;
		o.create = op_create;
		o.remove = op_remove;
		o.rename = op_rename;
		o.append = op_append;
		o.move = op_move;
		o.expunge = op_expunge;
		o.store_flags = op_store_flags;
		o.tls_info = op_tls_info;
		o.free = op_free;
		return o;
	}

	static struct mfs_store_ops make_ops_keeping()
	{
		struct mfs_store_ops o = make_ops();

		o.kept_index = op_kept_index;
		return o;
	}

	const struct mfs_store_ops ops_ = make_ops();
	const struct mfs_store_ops ops_keeping_ = make_ops_keeping();
};

#endif
