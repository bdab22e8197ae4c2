/* test_plan.c: the three-way rule, one test per rule of DESIGN.md section 3.
 * Pure planning: state pairs, server and local listings in, actions out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync/config.h"
#include "sync/plan.h"

enum { S = FLAG_SEEN, R = FLAG_ANSWERED, F = FLAG_FLAGGED, T = FLAG_DELETED, D = FLAG_DRAFT };

typedef struct fixture {
    state_pair_list pairs;
    store_msg_list srv, loc;
    sync_plan plan;
} fixture;

static void pair(fixture *f, uint32_t uid, const char *key, unsigned flags)
{
    if (f->pairs.n == f->pairs.cap) {
        f->pairs.cap = f->pairs.cap ? f->pairs.cap * 2 : 8;
        f->pairs.v = realloc(f->pairs.v, f->pairs.cap * sizeof *f->pairs.v);
    }
    state_pair *p = &f->pairs.v[f->pairs.n++];
    memset(p, 0, sizeof *p);
    p->uid = uid;
    p->key = key ? strdup(key) : NULL;
    p->flags = flags;
}

static void srv(fixture *f, uint32_t uid, unsigned flags)
{
    store_msg *m = store_msg_list_push(&f->srv);
    m->uid = uid;
    m->flags = flags;
}

static void loc(fixture *f, const char *key, unsigned flags)
{
    store_msg *m = store_msg_list_push(&f->loc);
    m->key = strdup(key);
    m->flags = flags;
}

static int setup(void **st)
{
    fixture *f = calloc(1, sizeof *f);
    store_msg_list_init(&f->srv);
    store_msg_list_init(&f->loc);
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    fixture *f = *st;
    state_pair_list_free(&f->pairs);
    store_msg_list_free(&f->srv);
    store_msg_list_free(&f->loc);
    sync_plan_free(&f->plan);
    free(f);
    return 0;
}

static void plan(fixture *f)
{
    sync_plan_folder(&f->pairs, &f->srv, &f->loc, &f->plan);
}

static const sync_action *only_action(fixture *f, int kind)
{
    assert_int_equal(f->plan.n, 1);
    assert_int_equal(f->plan.v[0].kind, kind);
    return &f->plan.v[0];
}

static void test_merge_per_flag(void **st)
{
    (void)st;
    assert_int_equal(sync_merge_flags(0, S, 0), S);         /* server set */
    assert_int_equal(sync_merge_flags(0, 0, F), F);         /* local set */
    assert_int_equal(sync_merge_flags(S | F, S, S | F), S); /* server cleared F */
    assert_int_equal(sync_merge_flags(S, S | F, R), R | F); /* both sides, different flags */
    assert_int_equal(sync_merge_flags(S, 0, 0), 0);         /* both cleared */
    assert_int_equal(sync_merge_flags(D, D | T, 0), T);     /* local cleared D, server set T */
    assert_int_equal(sync_merge_flags(S | R, S | R, S | R), S | R);
}

static void test_in_sync_needs_nothing(void **st)
{
    fixture *f = *st;
    pair(f, 1, "k1", S);
    srv(f, 1, S);
    loc(f, "k1", S);
    plan(f);
    assert_int_equal(f->plan.n, 0);
}

static void test_new_on_server_downloads(void **st)
{
    fixture *f = *st;
    srv(f, 7, F);
    plan(f);
    const sync_action *a = only_action(f, ACT_DOWNLOAD);
    assert_int_equal(a->srv, 0);
    assert_int_equal(a->flags, F);
}

static void test_new_locally_uploads(void **st)
{
    fixture *f = *st;
    loc(f, "new1", S);
    plan(f);
    assert_int_equal(only_action(f, ACT_UPLOAD)->loc, 0);
}

static void test_flag_changed_on_server_goes_local(void **st)
{
    fixture *f = *st;
    pair(f, 3, "k3", 0);
    srv(f, 3, S | F);
    loc(f, "k3", 0);
    plan(f);
    const sync_action *a = only_action(f, ACT_FLAGS);
    assert_int_equal(a->flags, S | F);
    assert_int_equal(f->plan.to_local_flags, 1);
    assert_int_equal(f->plan.to_server_flags, 0);
}

static void test_flag_changed_locally_goes_to_server(void **st)
{
    fixture *f = *st;
    pair(f, 3, "k3", S | F);
    srv(f, 3, S | F);
    loc(f, "k3", S | R);
    plan(f);
    const sync_action *a = only_action(f, ACT_FLAGS);
    assert_int_equal(a->flags, S | R);
    assert_int_equal(f->plan.to_server_flags, 1);
    assert_int_equal(f->plan.to_local_flags, 0);
}

static void test_flags_changed_on_both_sides_merge(void **st)
{
    fixture *f = *st;
    pair(f, 3, "k3", 0);
    srv(f, 3, S);
    loc(f, "k3", F);
    plan(f);
    const sync_action *a = only_action(f, ACT_FLAGS);
    assert_int_equal(a->flags, S | F);
    assert_int_equal(f->plan.to_server_flags, 1);
    assert_int_equal(f->plan.to_local_flags, 1);
}

static void test_same_change_on_both_sides_updates_base_only(void **st)
{
    fixture *f = *st;
    pair(f, 3, "k3", 0);
    srv(f, 3, S);
    loc(f, "k3", S);
    plan(f);
    const sync_action *a = only_action(f, ACT_FLAGS);
    assert_int_equal(a->flags, S);
    assert_int_equal(f->plan.to_server_flags, 0);
    assert_int_equal(f->plan.to_local_flags, 0);
}

static void test_deleted_locally_expunges_server(void **st)
{
    fixture *f = *st;
    pair(f, 4, "k4", S);
    srv(f, 4, S);
    plan(f);
    assert_int_equal(only_action(f, ACT_EXPUNGE_SERVER)->srv, 0);
}

static void test_expunged_on_server_removes_local(void **st)
{
    fixture *f = *st;
    pair(f, 4, "k4", S);
    loc(f, "k4", S);
    plan(f);
    assert_int_equal(only_action(f, ACT_EXPUNGE_LOCAL)->loc, 0);
}

static void test_deletion_wins_over_flag_change(void **st)
{
    fixture *f = *st;
    pair(f, 4, "k4", 0);
    srv(f, 4, F); /* flagged on the server ... */
    plan(f);      /* ... deleted locally: a deletion is a deliberate act */
    only_action(f, ACT_EXPUNGE_SERVER);
}

static void test_gone_on_both_sides_forgets(void **st)
{
    fixture *f = *st;
    pair(f, 4, "k4", 0);
    plan(f);
    only_action(f, ACT_FORGET);
}

static void test_one_sided_message_is_never_deleted(void **st)
{
    fixture *f = *st;
    /* A pair whose uid is unknown cannot expunge anything on the server, and a local
     * message with no pair is copied, never removed. */
    srv(f, 10, 0);
    loc(f, "lonely", 0);
    plan(f);
    assert_int_equal(f->plan.n, 2);
    assert_int_equal(f->plan.count[ACT_DOWNLOAD], 1);
    assert_int_equal(f->plan.count[ACT_UPLOAD], 1);
    assert_int_equal(f->plan.count[ACT_EXPUNGE_LOCAL] + f->plan.count[ACT_EXPUNGE_SERVER], 0);
}

static void test_large_folder_pairs_by_uid_and_key(void **st)
{
    fixture *f = *st;
    char key[32];
    for (uint32_t i = 1; i <= 5000; i++) {
        snprintf(key, sizeof key, "k%05u", 5001 - i); /* keys in the opposite order */
        pair(f, i, key, S);
        srv(f, i, i == 2500 ? S | F : S);
        loc(f, key, S);
    }
    plan(f);
    const sync_action *a = only_action(f, ACT_FLAGS);
    assert_int_equal(f->pairs.v[a->pair].uid, 2500);
    assert_int_equal(a->flags, S | F);
}

/* A flag change interrupted after one side took it: planning again from the same base gives
 * the same result, whichever sides were done. This is why a PENDING_FLAGS intent resolves by
 * keeping the base (every combination of 5 flags, both sides done or not). */
static void test_flag_merge_resumes_to_same_result(void **st)
{
    (void)st;
    for (unsigned b = 0; b < 32; b++)
        for (unsigned s = 0; s < 32; s++)
            for (unsigned l = 0; l < 32; l++) {
                unsigned m = sync_merge_flags(b, s, l);
                assert_int_equal(sync_merge_flags(b, m, l), m);
                assert_int_equal(sync_merge_flags(b, s, m), m);
                assert_int_equal(sync_merge_flags(b, m, m), m);
            }
}

static void test_expunge_policy_keeps_the_copy(void **st)
{
    fixture *f = *st;
    pair(f, 1, "a", S); /* gone locally */
    srv(f, 1, S);
    pair(f, 2, "b", S); /* gone on the server */
    loc(f, "b", S);
    plan(f);
    sync_plan_expunge_policy(&f->plan, CFG_EXPUNGE_LOCAL);
    assert_int_equal(f->plan.count[ACT_EXPUNGE_SERVER], 0);
    assert_int_equal(f->plan.count[ACT_KEEP_SERVER], 1);
    assert_int_equal(f->plan.count[ACT_EXPUNGE_LOCAL], 1);
    sync_plan_free(&f->plan);
    plan(f);
    sync_plan_expunge_policy(&f->plan, CFG_EXPUNGE_NONE);
    assert_int_equal(f->plan.count[ACT_KEEP_SERVER], 1);
    assert_int_equal(f->plan.count[ACT_KEEP_LOCAL], 1);
    assert_int_equal(f->plan.count[ACT_EXPUNGE_SERVER] + f->plan.count[ACT_EXPUNGE_LOCAL], 0);
    sync_plan_free(&f->plan);
    plan(f);
    sync_plan_expunge_policy(&f->plan, CFG_EXPUNGE_BOTH);
    assert_int_equal(f->plan.count[ACT_EXPUNGE_SERVER] + f->plan.count[ACT_EXPUNGE_LOCAL], 2);
}

/* After the policy kept one copy, the pair holds only that side: it is neither copied back
 * nor removed, and it is forgotten once that copy goes too. */
static void test_unpaired_copy_is_left_alone(void **st)
{
    fixture *f = *st;
    pair(f, 0, "kept-locally", S);
    loc(f, "kept-locally", S | F);
    pair(f, 7, NULL, 0); /* kept on the server */
    srv(f, 7, S);
    pair(f, 0, "gone-now", 0);
    plan(f);
    assert_int_equal(f->plan.n, 1);
    assert_int_equal(f->plan.v[0].kind, ACT_FORGET);
    assert_int_equal(f->plan.v[0].pair, 2);
}

/* A server that said only what changed since the last complete pass: the base stands in for
 * every other pair under the old UIDNEXT, and the plan is the one a full listing gives. */
static void test_view_from_base_plans_as_full_listing(void **st)
{
    fixture *f = *st;
    const unsigned base[] = {S, S, 0, R, S, F, 0, S | T};
    char key[8];
    for (uint32_t uid = 1; uid <= 8; uid++) {
        snprintf(key, sizeof key, "k%u", uid);
        pair(f, uid, key, base[uid - 1]);
    }
    pair(f, 9, NULL, S);  /* kept on the server only, by policy */
    pair(f, 0, "k10", 0); /* kept locally only */
    const uint32_t unchanged[] = {1, 4, 5, 6, 7, 8};
    for (size_t i = 0; i < sizeof unchanged / sizeof *unchanged; i++)
        srv(f, unchanged[i], base[unchanged[i] - 1]);
    srv(f, 9, S);
    srv(f, 2, F);  /* changed */
    srv(f, 11, D); /* arrived before the last pass ended, not paired */
    srv(f, 20, 0); /* new */
    /* 3 expunged on the server; 4 removed locally; 5 and 8 changed locally */
    loc(f, "k1", S), loc(f, "k2", S), loc(f, "k3", 0), loc(f, "k5", S | F);
    loc(f, "k6", F), loc(f, "k7", 0), loc(f, "k8", S), loc(f, "k10", 0), loc(f, "k30", 0);
    plan(f);
    sync_plan full = f->plan;

    store_msg_list listed;
    store_msg_list_init(&listed);
    const store_msg told[] = {{.uid = 20}, {.uid = 2, .flags = F}, {.uid = 11, .flags = D}};
    for (size_t i = 0; i < 3; i++)
        *store_msg_list_push(&listed) = told[i];
    uidset gone;
    uidset_init(&gone);
    uidset_add(&gone, 3, 3);
    srv_view v = {.listed = &listed, .below = 12, .gone = &gone};
    sync_plan_folder_view(&f->pairs, &v, &f->loc, &f->plan);

    assert_int_equal(f->plan.n, full.n);
    size_t from_base = 0;
    for (size_t i = 0; i < full.n; i++) {
        const sync_action *a = &full.v[i], *b = &f->plan.v[i];
        assert_int_equal(b->kind, a->kind);
        assert_int_equal(b->pair, a->pair);
        assert_int_equal(b->loc, a->loc);
        assert_int_equal(b->flags, a->flags);
        assert_int_equal(b->uid, a->uid);
        assert_true((a->srv < 0) == (b->srv == -1));
        if (b->srv >= 0)
            assert_int_equal(listed.v[b->srv].uid, a->uid);
        from_base += b->srv == SRV_BASE;
    }
    assert_true(from_base >= 3); /* 4 removed locally, 5 and 8 changed locally */
    assert_int_equal(f->plan.count[ACT_EXPUNGE_LOCAL], 1);
    sync_plan_free(&full);
    store_msg_list_free(&listed);
    uidset_free(&gone);
}

static bool keep_flagged(const state_pair *p, const store_msg *local, void *arg)
{
    (void)local;
    (void)arg;
    return (p->flags & F) != 0;
}

/* A folder planned in windows smaller than it gives the plan of the whole, with the pairs
 * the actions concern (and those asked for) copied out for the steps after it. */
static void test_windows_plan_as_whole(void **st)
{
    fixture *f = *st;
    char key[8];
    for (uint32_t uid = 1; uid <= 9; uid++) {
        snprintf(key, sizeof key, "k%u", uid);
        pair(f, uid, key, uid == 3 ? F : S);
        if (uid != 4)
            srv(f, uid, uid == 6 ? S | R : S); /* 4 expunged; 6 answered on the server */
        if (uid != 7)
            loc(f, key, S); /* 7 removed locally */
    }
    pair(f, 0, "k20", 0); /* kept locally only, by policy */
    loc(f, "k20", 0);
    srv(f, 30, 0);    /* new on the server */
    loc(f, "k31", 0); /* new locally */
    plan(f);
    sync_plan whole = f->plan;

    srv_view v = {.listed = &f->srv};
    state_pair_list kept = {0};
    sync_plan_walk w = {
        .out = &f->plan, .srv = &v, .loc = &f->loc, .kept = &kept, .keep = keep_flagged};
    sync_plan_begin(&w);
    for (size_t at = 0; at < f->pairs.n; at += 4) {
        state_pair_list win = {.v = f->pairs.v + at,
                               .n = f->pairs.n - at < 4 ? f->pairs.n - at : 4};
        sync_plan_window(&w, &win);
    }
    sync_plan_end(&w);

    assert_int_equal(f->plan.n, whole.n);
    for (size_t i = 0; i < whole.n; i++) {
        const sync_action *a = &whole.v[i], *b = &f->plan.v[i];
        assert_int_equal(b->kind, a->kind);
        assert_int_equal(b->srv, a->srv);
        assert_int_equal(b->loc, a->loc);
        assert_int_equal(b->flags, a->flags);
        assert_int_equal(a->pair < 0, b->pair < 0);
        if (a->pair >= 0) {
            assert_int_equal(kept.v[b->pair].uid, f->pairs.v[a->pair].uid);
            assert_string_equal(kept.v[b->pair].key, f->pairs.v[a->pair].key);
        }
    }
    assert_int_equal(f->plan.count[ACT_DOWNLOAD], 1);
    assert_int_equal(f->plan.count[ACT_UPLOAD], 1);
    /* 4, 6, 7 have actions; 3 was asked for; the others stay in the state. */
    assert_int_equal(kept.n, 4);
    sync_plan_free(&whole);
    state_pair_list_free(&kept);
}

static bool always(const state_pair *p, void *arg)
{
    (void)p;
    (void)arg;
    return true;
}

/* A local folder unchanged since the last pass is not listed: with loc_has saying yes, every
 * keyed pair stands for its file, and the plan is the one a listing of those files gives. */
static void test_local_base_plans_as_listing(void **st)
{
    fixture *f = *st;
    char key[8];
    for (uint32_t uid = 1; uid <= 6; uid++) {
        snprintf(key, sizeof key, "k%u", uid);
        pair(f, uid, key, uid == 2 ? S | F : S);
        loc(f, key, uid == 2 ? S | F : S);
        if (uid != 3)
            srv(f, uid, uid == 2 ? S : uid == 5 ? S | R : S); /* 3 expunged, 2 and 5 changed */
    }
    pair(f, 7, NULL, S); /* kept on the server only, by policy */
    srv(f, 7, S);
    srv(f, 9, 0); /* new on the server */
    plan(f);
    sync_plan listed = f->plan;

    store_msg_list none;
    store_msg_list_init(&none);
    srv_view v = {.listed = &f->srv};
    sync_plan_walk w = {.out = &f->plan, .srv = &v, .loc = &none, .loc_has = always};
    sync_plan_begin(&w);
    sync_plan_window(&w, &f->pairs);
    sync_plan_end(&w);

    assert_int_equal(f->plan.n, listed.n);
    for (size_t i = 0; i < listed.n; i++) {
        const sync_action *a = &listed.v[i], *b = &f->plan.v[i];
        assert_int_equal(b->kind, a->kind);
        assert_int_equal(b->pair, a->pair);
        assert_int_equal(b->srv, a->srv);
        assert_int_equal(b->flags, a->flags);
        assert_true(a->loc >= 0 ? b->loc == LOC_BASE : b->loc == -1);
    }
    assert_int_equal(f->plan.count[ACT_EXPUNGE_LOCAL], 1);
    assert_int_equal(f->plan.count[ACT_DOWNLOAD], 1);
    assert_int_equal(f->plan.to_local_flags, 2);
    sync_plan_free(&listed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_per_flag),
        cmocka_unit_test_setup_teardown(test_in_sync_needs_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_on_server_downloads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_locally_uploads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_changed_on_server_goes_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_changed_locally_goes_to_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flags_changed_on_both_sides_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_change_on_both_sides_updates_base_only, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_deleted_locally_expunges_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expunged_on_server_removes_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deletion_wins_over_flag_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone_on_both_sides_forgets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_sided_message_is_never_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_folder_pairs_by_uid_and_key, setup, teardown),
        cmocka_unit_test(test_flag_merge_resumes_to_same_result),
        cmocka_unit_test_setup_teardown(test_expunge_policy_keeps_the_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unpaired_copy_is_left_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_from_base_plans_as_full_listing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_windows_plan_as_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_base_plans_as_listing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
