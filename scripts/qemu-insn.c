/*
 * A QEMU TCG plugin that counts the guest instructions a program retires, for scripts/arm-cost.
 * Build: gcc -shared -fPIC -O2 -o libinsn.so scripts/qemu-insn.c
 * Use:   qemu-aarch64 -plugin ./libinsn.so -d plugin PROGRAM...   (prints "insns N" at exit)
 *
 * Debian's qemu-user 7.2 is built with plugin support but ships no qemu-plugin.h, so the few
 * declarations used are written out below, as QEMU 7.2's include/qemu/qemu-plugin.h has them
 * (plugin API version 1; the calls used here have not changed since 4.2).
 *
 * Counting: when QEMU translates a block, we attach a callback that adds the block's instruction
 * count each time the block runs. A callback with an atomic add rather than QEMU's inline add:
 * in user mode every guest thread is a host thread sharing the one counter, and faced has a few
 * threads (event writer, logging) beside the one running the models, so the inline add's plain
 * read-modify-write would lose counts when two of them run at once. The callback costs ~2x the
 * emulation time; exact counts are the point. A block left early (a fault, a signal) still
 * counts whole: faced does not fault in its hot paths, and the error is a few instructions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t insns;

static void on_exec(unsigned int vcpu, void *n) {
    (void)vcpu;
    __atomic_fetch_add(&insns, (uint64_t)(uintptr_t)n, __ATOMIC_RELAXED);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *p) {
    (void)id;
    (void)p;
    char line[64];
    snprintf(line, sizeof line, "insns %llu\n",
             (unsigned long long)__atomic_load_n(&insns, __ATOMIC_RELAXED));
    qemu_plugin_outs(line);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info, int argc,
                                                               char **argv) {
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
