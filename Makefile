# mailfs - mount a mail account as a directory tree
#
#   make            build ./mailfs (installs missing packages first)
#   make test       build and run every unit and integration test, twice:
#                   on the normal build and under ASan + UBSan
#   make demo       start local mail servers with sample mail, mount ./demo-mail
#   make demo-stop  unmount and stop what make demo started
#   make install    install under $(DESTDIR)$(PREFIX)
#   make deps       apt-get install every build and test dependency
#   SANITIZE=1      build with AddressSanitizer and UndefinedBehaviorSanitizer
#                   (make test SANITIZE=1: the sanitizer pass alone)

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build

CC      ?= cc
CXX     ?= c++
PKGS     = fuse3 libetpan openssl zlib
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE
CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=gnu++17 -Wall -Wextra -Werror -D_GNU_SOURCE
ifeq ($(SANITIZE),1)
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# -O1, as AddressSanitizer suggests: about a quarter less build time
CFLAGS  := $(patsubst -O2,-O1,$(CFLAGS))
CXXFLAGS := $(patsubst -O2,-O1,$(CXXFLAGS))
CFLAGS  += $(SANFLAGS)
CXXFLAGS += $(SANFLAGS)
LDFLAGS += $(SANFLAGS)
BUILD    = build-san
endif
# The unit tests' own code (GoogleTest) is compiled without optimisation:
# it takes a third of the time, and what it tests keeps CFLAGS.
TEST_CXXFLAGS = $(filter-out -O1 -O2 -O3,$(CXXFLAGS)) -O0

# Debian packages needed to build, test and demo.
DEPS = build-essential pkg-config libfuse3-dev fuse3 libetpan-dev libssl-dev zlib1g-dev \
       openssl libgtest-dev dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd \
       postfix python3 clang libclang-rt-14-dev isync curl msmtp rsync

# Packages are looked up only when pkg-config cannot find the libraries.
HAVE_LIBS := $(shell pkg-config --exists $(PKGS) 2>/dev/null && echo yes)
ifeq ($(HAVE_LIBS),yes)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))
DEPS_FIRST :=
else
PKG_CFLAGS  = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
DEPS_FIRST := deps
endif
LIBS = $(PKG_LIBS) -lpthread

SRCS := $(wildcard src/*.c)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIB_OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS))

# Each unit test links the module under test and what it needs, nothing else.
UNIT_config = config error
UNIT_names  = names base64 error
UNIT_tls    = tls error
UNIT_compress = tls error
UNIT_mime   = mime header names base64 hash error
UNIT_imap   = imap listline query auth skeleton idxcache hash privdir tls names base64 store header log error config sasl
UNIT_idxcache = idxcache hash privdir error
UNIT_outmsg = outmsg header names base64 error
UNIT_spool  = spool sentq statefile privdir outmsg header smtp auth tls names base64 log error config sasl
UNIT_smtp   = smtp auth tls outmsg header names base64 log error config sasl
UNIT_pop3   = pop3 header query auth tls names base64 store log error config sasl
UNIT_sasl   = sasl base64
UNIT_base64 = base64
UNIT_hash   = hash
UNIT_privdir = privdir error
UNIT_auth   = auth config log error
UNIT_sentq  = sentq statefile privdir log error
UNIT_cache  = cache hash privdir error log
UNIT_node   = node hash
UNIT_journal = journal store header names base64 log error
UNIT_query  = query names base64 error
UNIT_listline = listline store header names base64 error
UNIT_search = $(UNIT_fs)
UNIT_skeleton = skeleton store mime header names base64 hash error
UNIT_fs     = $(sort fs folders folderlist journal state prefetch msgview skeleton outbox search query node mime header hash cache store $(UNIT_spool))
UNIT_TESTS := $(patsubst tests/unit/%_test.cc,%,$(wildcard tests/unit/*_test.cc))
UNIT_BINS  := $(patsubst %,$(BUILD)/tests/%_test,$(UNIT_TESTS))

.PHONY: all test san-build unit integration demo demo-stop install deps clean fuzz bench

all: $(DEPS_FIRST) mailfs

mailfs: $(BUILD)/mailfs
	cp $< $@.new && mv -f $@.new $@

.PHONY: mailfs

$(BUILD)/mailfs: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h) | $(DEPS_FIRST)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

.SECONDEXPANSION:
$(BUILD)/tests/%_test: tests/unit/%_test.cc $$(addprefix $(BUILD)/obj/,$$(addsuffix .o,$$(UNIT_$$*))) $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(TEST_CXXFLAGS) $(PKG_CFLAGS) -Isrc -o $@ $< $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(UNIT_$*))) \
		$(LDFLAGS) -lgtest -lgtest_main $(LIBS)

unit-build: $(DEPS_FIRST) $(UNIT_BINS)

# Each fuzz target's seed corpus replayed once by `make test`
# (tests/fuzz/README.md): the target and tests/fuzz/replay.c, linked with
# the objects of the sources its "// fuzz-sources:" line names.
FUZZ_NAMES  := $(patsubst tests/fuzz/%_fuzz.c,%,$(wildcard tests/fuzz/*_fuzz.c))
FUZZ_REPLAY := $(patsubst %,$(BUILD)/fuzz/%_replay,$(FUZZ_NAMES))
fuzz_objs = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(shell sed -n 's|^// fuzz-sources:||p' tests/fuzz/$(1)_fuzz.c | head -n 1))

$(BUILD)/fuzz/%_replay: tests/fuzz/%_fuzz.c tests/fuzz/replay.c $$(call fuzz_objs,$$*) $(wildcard src/*.c src/*.h tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-error $(PKG_CFLAGS) -Isrc -o $@ tests/fuzz/replay.c $< \
		$(call fuzz_objs,$*) $(LDFLAGS) $(LIBS)

# make test: every test twice, on the normal build and on the build with
# AddressSanitizer and UndefinedBehaviorSanitizer (build-san/); the last line
# counts both. make test SANITIZE=1: the sanitizer pass alone. Both builds
# use every processor; the sanitizer build runs while the normal pass tests
# (run_all.py --build), and the passes overlap.
NPROC := $(shell nproc 2>/dev/null || echo 2)
# expanded here, so that make -n test does not run run_all.py
SAN_BUILD := $(MAKE) --no-print-directory -j$(NPROC) SANITIZE=1 san-build
# its mailfs and the longest unit tests first: the sanitized integration
# tests and those start with them, while the rest builds
SAN_FIRST := $(MAKE) --no-print-directory -j$(NPROC) SANITIZE=1 build-san/mailfs \
	build-san/tests/spool_test build-san/tests/smtp_test
ifeq ($(SANITIZE),1)
test: deps
	@$(MAKE) --no-print-directory -j$(NPROC) SANITIZE=1 san-build
	@/usr/bin/python3 tests/run_all.py --pass sanitized $(BUILD)/mailfs $(UNIT_BINS) $(FUZZ_REPLAY)
else
test: deps
	@$(MAKE) --no-print-directory -j$(NPROC) mailfs $(UNIT_BINS) $(FUZZ_REPLAY)
	@/usr/bin/python3 tests/run_all.py --pass normal mailfs $(UNIT_BINS) $(FUZZ_REPLAY) \
		--pass sanitized --build-first "$(SAN_FIRST)" --build "$(SAN_BUILD)" \
		build-san/mailfs $(patsubst $(BUILD)/%,build-san/%,$(UNIT_BINS) $(FUZZ_REPLAY))
endif

san-build: $(BUILD)/mailfs $(UNIT_BINS) $(FUZZ_REPLAY)

demo: deps mailfs
	@tests/demo.sh start

demo-stop:
	@tests/demo.sh stop

install: mailfs
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/sbin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 mailfs $(DESTDIR)$(PREFIX)/bin/mailfs
	install -m 0755 mount-helpers/mount.mailfs $(DESTDIR)/sbin/mount.mailfs
	install -m 0644 docs/mailfs.1 $(DESTDIR)$(PREFIX)/share/man/man1/mailfs.1
	install -d $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/lib/systemd/user
	install -m 0644 docs/mailfs.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/mailfs.conf.5
	install -m 0644 mount-helpers/mailfs@.service $(DESTDIR)$(PREFIX)/lib/systemd/user/mailfs@.service

# libFuzzer targets, FUZZ_SECONDS each (tests/fuzz/README.md)
FUZZ_SECONDS ?= 60
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" tests/fuzz/run.sh

bench: deps mailfs
	@/usr/bin/python3 tests/bench/bench.py

deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		echo 'postfix postfix/main_mailer_type select No configuration' | $$SUDO debconf-set-selections; \
		$$SUDO apt-get update && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $$missing; \
	fi

clean:
	rm -rf build build-san mailfs
