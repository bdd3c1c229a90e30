# sbxd build.  `make` builds the daemon and the init agent into build/.
CC ?= gcc
CFLAGS ?= -O2 -g
CFLAGS += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Wformat=2 -fno-strict-aliasing -pthread
ifeq ($(WERROR),1)
CFLAGS += -Werror
endif
# Hardening of what is installed: stack canaries, checked libc calls,
# position-independent executables with read-only relocations resolved
# at start-up.  `make HARDEN= HARDEN_LD=` builds without (sanitizer builds).
HARDEN ?= -fstack-protector-strong -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2 -fPIE
HARDEN_LD ?= -pie -Wl,-z,relro,-z,now
SPEC_DIR ?= $(CURDIR)/templates
DOCS_DIR ?= $(CURDIR)/docs
DEFS = -DSBXD_SPEC_DIR='"$(SPEC_DIR)"' -DSBXD_DOCS_DIR='"$(DOCS_DIR)"'

B ?= build
COMMON = src/common/error.c src/common/util.c src/common/proto.c src/common/log.c
CORE = src/core/sandbox.c src/core/agent.c src/core/isolate.c src/core/fspolicy.c src/core/cgroup.c src/core/seccomp.c src/core/disk.c src/core/volume.c src/core/template.c src/core/net.c src/core/netpolicy.c src/core/netproxy.c src/core/egress_tls.c src/core/egress.c
# the service layer: organisations, quotas, records, runs, events, webhooks
SERVICE = src/service/service.c src/service/runs.c src/service/store.c src/service/plans.c src/service/webhook.c src/service/fairshare.c src/service/outbound.c src/service/encode.c src/service/output.c src/service/interp.c src/service/activity.c src/service/metering.c src/service/samples.c src/service/sample_ring.c src/service/checkpoints.c src/service/snapshots.c src/service/volumes.c src/service/placement.c src/service/warm.c src/service/tools.c src/service/builds.c src/service/store_agents.c src/service/store_samples.c src/service/store_census.c src/service/telemetry.c src/service/models.c src/service/agents.c src/service/mcp_client.c
# the HTTP dialects and the server that routes to them
API = src/api/server.c src/api/routes.c src/api/sandbase.c src/api/e2b.c src/api/e2b_snapshots.c src/api/e2b_volumes.c src/api/seed002.c src/api/e2b_envd.c src/api/interp.c src/api/events.c src/api/files.c src/api/network.c src/api/egress.c src/api/v1.c src/api/v1_storage.c src/api/terminal.c src/api/proxy.c src/api/e2b_templates.c src/api/mcp.c src/api/agents.c src/api/metrics.c
DAEMON = src/daemon/main.c src/daemon/log_json.c $(API) $(SERVICE)
INIT = src/init/init.c src/init/files.c src/init/users.c
# sbx, the users' command line (a client of the daemon's API)
CLI = src/cli/main.c src/cli/http.c src/cli/output.c src/cli/sandboxes.c src/cli/exec.c src/cli/cp.c src/cli/template.c src/cli/mcp.c

LIBS = -ljansson -lseccomp -lmicrohttpd -lsqlite3 -lcurl -lssl -lcrypto -lldns -lpthread -lnftables -lmnl -lnetfilter_log -lwslay -lhttp_parser -lz -lm

all: $(B)/sbxd $(B)/sbx-init $(B)/sbxd-bench $(B)/sbx

$(B):
	mkdir -p $(B)

$(B)/libsbx.a: $(COMMON) $(CORE) $(wildcard src/*/*.h) | $(B)
	rm -f $@ $(B)/obj-*.o
	for f in $(COMMON) $(CORE); do \
	  $(CC) $(CFLAGS) $(HARDEN) $(DEFS) -c $$f -o $(B)/obj-$$(basename $$f .c).o || exit 1; done
	ar rcs $@ $(B)/obj-*.o

$(B)/sbxd: $(DAEMON) $(wildcard src/daemon/*.h src/api/*.h src/service/*.h) $(B)/libsbx.a
	$(CC) $(CFLAGS) $(HARDEN) $(HARDEN_LD) $(DEFS) -o $@ $(DAEMON) $(B)/libsbx.a $(LIBS)

# The init agent runs inside sandboxes whose root is a template, so it is
# linked statically: it must not load anything from the sandbox's disk.
# -static-pie keeps it position-independent (glibc relocates it itself).
$(B)/sbx-init: $(INIT) $(COMMON) $(wildcard src/*/*.h) | $(B)
	$(CC) $(CFLAGS) $(HARDEN) $(if $(HARDEN_LD),-static-pie $(filter-out -pie,$(HARDEN_LD)),-static) -o $@ $(INIT) $(COMMON)

$(B)/sbx: $(CLI) src/cli/cli.h | $(B)
	$(CC) $(CFLAGS) $(HARDEN) $(HARDEN_LD) -o $@ $(CLI) -lcurl -ljansson -lcrypto -lpthread

$(B)/sbxd-bench: bench/bench.c $(B)/libsbx.a
	$(CC) $(CFLAGS) $(HARDEN) $(HARDEN_LD) $(DEFS) -o $@ bench/bench.c $(B)/libsbx.a $(LIBS)

# The fuzz harnesses (tests/fuzz/fuzz_NAME.c), for libFuzzer: clang only,
# `make CC=clang B=build-clang fuzz` gives $(B)/fuzz_NAME.  Everything in
# them runs under AddressSanitizer (with LeakSanitizer) and
# UndefinedBehaviorSanitizer, whose first report aborts; the product's
# sources are built with the fuzzer's coverage, not hardened.
FUZZ_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_NAMES = $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SRC = $(COMMON) $(CORE) $(SERVICE) $(API) src/daemon/log_json.c
FUZZ_OBJ = $(patsubst src/%.c,$(B)/fuzz-obj/%.o,$(FUZZ_SRC))

fuzz: $(FUZZ_NAMES:%=$(B)/fuzz_%)

$(B)/fuzz-obj/%.o: src/%.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(DEFS) -c $< -o $@

$(B)/libsbxd-fuzz.a: $(FUZZ_OBJ)
	rm -f $@
	ar rcs $@ $^

$(B)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(B)/libsbxd-fuzz.a
	$(CC) $(CFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer $(DEFS) -Isrc -Itests/fuzz -o $@ $< $(B)/libsbxd-fuzz.a $(LIBS)

clean:
	rm -rf $(B)

.PHONY: all clean fuzz
