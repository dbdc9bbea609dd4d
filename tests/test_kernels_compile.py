"""Every Triton kernel compiles for a Hopper GPU (sm_90), on a machine without one.

The interpreter that runs the kernel tests on the CPU is lenient about types that the compiler is not
(a specialised constant argument, a loop-carried variable changing dtype, ...). Triton compiles to a
cubin with its bundled ptxas without a GPU, so this catches such errors before the GPU does. Runs in a
subprocess: this process has TRITON_INTERPRET=1 set, under which the kernels are interpreter functions.
"""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import sys
    import triton, triton.language as tl
    from triton.compiler import ASTSource
    from triton.backends.compiler import GPUTarget
    from afdps.kernels import fourier as fo, groupnorm as gn, langevin as lv, particle_step as ps, resample as rs
    from afdps.kernels import conv_in as ci, residual as rd

    target = GPUTarget("cuda", 90, 32)
    failed = []

    def check(fn, types, consts, num_warps=4):
        sig = {n: ("constexpr" if n in consts else types[n]) for n in fn.arg_names}
        try:
            triton.compile(ASTSource(fn, sig, constexprs=consts), target=target, options={"num_warps": num_warps})
        except Exception as exc:
            failed.append(f"{fn.__name__} {consts}: {type(exc).__name__}: {str(exc)[:2000]}")

    rows = dict(R="i32", D="i32", N="i32", NB="i32")
    dims = dict(C="i32", C1="i32", HW="i32", W="i32", PS="i32", S="i32", NQ="i32", PQ="i32", NCB="i32")
    adims = dict(C="i32", C1="i32", HW="i32", W="i32", SA="i32", LA="i32", SB="i32", LB="i32", NQ="i32", PQ="i32",
                 NCB="i32")
    sums = dict(s1a_ptr="*fp32", s2a_ptr="*fp32", ka_ptr="*fp32", s1b_ptr="*fp32", s2b_ptr="*fp32", kb_ptr="*fp32")
    rowstrides = dict(SC_S="i32", SH_S="i32", PB_S="i32")
    # Where a kernel has three or more options, every pair of values of two options that the full products had is
    # compiled (a pairwise covering design), not every combination: a cold compile cache took 80 s for the 70
    # compilations of the full products on the 2-core CPU, and an error of one branch, or of two together, still
    # shows. The rows include what the fast network compiles on the GPU (bfloat16, channels-last: the statistics
    # alone, the plain norm, the head's float32 output, the residual with statistics).
    for st, cl, two in (("*bf16", True, False), ("*bf16", False, True), ("*fp32", False, False), ("*fp32", True, True)):
        check(gn._groupnorm_stats_kernel, dict(x_ptr=st, x2_ptr=st, s1_ptr="*fp32", s2_ptr="*fp32", k_ptr="*fp32",
                                               **dims),
              dict(CBW=32, CL=cl, TWO=two, CDT=tl.float32, BLOCK_P=128, CBLK=32), 8)
    for i, (out32, two, res) in enumerate(((False, False, 0), (True, False, 0), (False, True, 0), (False, False, 1),
                                           (False, True, 2))):
        pairs = {0: (("*bf16", True), ("*fp32", False)), 1: (("*bf16", True), ("*bf16", False)),
                 4: (("*bf16", False), ("*fp32", True))}.get(i, (("*bf16", True), ("*fp32", False)))
        for st, cl in pairs:
            check(gn._groupnorm_apply_kernel, dict(x_ptr=st, x2_ptr=st, **sums,
                  w_ptr="*fp32", b_ptr="*fp32", sc_ptr=st, sh_ptr=st, pb_ptr="*fp32", y_ptr="*fp32" if out32 else st,
                  eps="fp32", **adims, **rowstrides),
                  dict(Cg=12, GB=2, CL=cl, TWO=two, RES=res, SCALE_SHIFT=True, SILU=True, PRE_BIAS=True,
                       CDT=tl.float32, BLOCK_P=128, CBLK=32), 8)
    check(gn._groupnorm_apply_kernel, dict(x_ptr="*fp64", x2_ptr="*fp64", s1a_ptr="*fp64", s2a_ptr="*fp64",
          ka_ptr="*fp64", s1b_ptr="*fp64", s2b_ptr="*fp64", kb_ptr="*fp64", w_ptr="*fp64", b_ptr="*fp64", sc_ptr="*fp64", sh_ptr="*fp64",
          pb_ptr="*fp64", y_ptr="*fp64", eps="fp32", **adims, **rowstrides),
          dict(Cg=48, GB=1, CL=False, TWO=False, RES=2, SCALE_SHIFT=False, SILU=False, PRE_BIAS=False, CDT=tl.float64,
               BLOCK_P=64, CBLK=64, SA=1, SB=0))
    for res in range(3):
        for st, stats in ((("*bf16", True), ("*fp32", False)) if res != 1 else (("*bf16", False), ("*fp32", True))):
            check(rd._residual_add_kernel, dict(a_ptr=st, s_ptr=st, b_ptr=st, y_ptr=st, s1_ptr="*fp32",
                  s2_ptr="*fp32", k_ptr="*fp32", C="i32", H="i32", W="i32", NCB="i32", PS="i32", S="i32"),
                  dict(RES=res, HAS_BIAS=True, CL=res != 1, CDT=tl.float32, STATS=stats, BLOCK_P=64, CBLK=64), 8)
    for st, ieee in (("*bf16", False), ("*fp32", True)):
        for cl in (False, True):
            check(ci._conv_in_kernel, dict(x_ptr="*fp32", w_ptr=st, b_ptr=st, y_ptr=st, s1_ptr="*fp32", s2_ptr="*fp32",
                  k_ptr="*fp32", Ci="i32", Co="i32", H="i32", W="i32", NCB="i32", PS="i32", S="i32"),
                  dict(XCL=not cl, CL=cl, HAS_BIAS=True, STATS=True, IEEE=ieee, KP=32, BLOCK_P=64, CBLK=64), 8)
    for st, cdt in (("*fp32", tl.float32), ("*bf16", tl.float32), ("*fp64", tl.float64)):
        check(ps._particle_step_kernel, dict(x_ptr=st, s_ptr=st, g_ptr="*fp32", keys_ptr="*i64", p_ptr="*fp64",
              out_ptr=st, part_ptr="*fp64" if cdt == tl.float64 else "*fp32", ROW0="i32", **rows),
              dict(EULER=True, NOISE=True, CDT=cdt, BLOCK=2048), 8)
    check(ps._particle_step_kernel, dict(x_ptr="*fp32", s_ptr="*fp32", g_ptr="*fp32", keys_ptr="*i64", p_ptr="*fp64",
          out_ptr="*fp32", part_ptr="*fp32", ROW0="i32", **rows),
          dict(EULER=False, NOISE=False, CDT=tl.float32, BLOCK=128, D=1, N=1))
    check(ps._particle_step_finish_kernel, dict(part_ptr="*fp32", p_ptr="*fp64", out_ptr="*fp64", R="i32", NB="i32"),
          dict(BLOCK_R=16, BLOCK_K=64))
    check(lv._langevin_norms_kernel, dict(s_ptr="*bf16", g_ptr="*fp32", keys_ptr="*i64", p_ptr="*fp64",
          part_ptr="*fp32", **rows), dict(CDT=tl.float32, BLOCK=2048), 8)
    for live, has_live in (("*u8", True), ("*fp64", False)):  # the live mask, or e itself as the unread dummy
        check(lv._langevin_size_kernel, dict(part_ptr="*fp32", p_ptr="*fp64", live_ptr=live, e_ptr="*fp64", R="i32",
              N="i32", NB="i32"), dict(BLOCK_N=64, BLOCK_K=64, HAS_LIVE=has_live))
    check(lv._langevin_size_kernel, dict(part_ptr="*fp32", p_ptr="*fp64", live_ptr="*fp64", e_ptr="*fp64", R="i32",
          N="i32", NB="i32"), dict(BLOCK_N=64, BLOCK_K=64, HAS_LIVE=False, N=1))
    check(lv._langevin_update_kernel, dict(x_ptr="*bf16", s_ptr="*bf16", g_ptr="*fp32", keys_ptr="*i64", p_ptr="*fp64",
          e_ptr="*fp64", out_ptr="*bf16", D="i32", N="i32", NB="i32"), dict(CDT=tl.float32, BLOCK=2048), 8)
    res = dict(lw_ptr="*fp64", keys_ptr="*i64", thr_ptr="*fp64", anc_ptr="*i64", nlw_ptr="*fp64", ess_ptr="*fp64",
               res_ptr="*u8", cdf_ptr="*fp64", cnt_ptr="*i32", end_ptr="*i32", mvd_ptr="*i32", mvs_ptr="*i32",
               mvn_ptr="*i32", N="i32")
    for scheme in range(4):
        check(rs._resample_kernel, res, dict(SCHEME=scheme, BLOCK=1024, LOG_N=11))
    check(rs._resample_kernel, dict(res, lw_ptr="*fp32"), dict(SCHEME=0, BLOCK=16, LOG_N=1, N=1))
    check(rs._moved_list_kernel, dict(anc_ptr="*i64", mvd_ptr="*i32", mvs_ptr="*i32", mvn_ptr="*i32", N="i32"),
          dict(BLOCK=1024))
    check(rs._gather_moved_kernel, dict(x_ptr="*bf16", mvd_ptr="*i32", mvs_ptr="*i32", mvn_ptr="*i32", B="i32",
          N="i32", D="i32", NC="i32"), dict(BLOCK=4096, BLOCK_B=16))
    for st in ("*fp32", "*fp64"):
        for norms in (0, 1, 2):
            check(fo._blur_residual_kernel, dict(x_ptr=st, h_ptr=st, y_ptr=st, r_ptr=st, s_ptr="*fp64", part_ptr=st,
                  M="i32", HW="i32", WR="i32", LASTW="i32", YDIV="i32", NB="i32", L="i32"),
                  dict(NORMS=norms, BLOCK=1024, YDIV=1))
        check(fo._blur_guidance_kernel, dict(x_ptr=st, h_ptr=st, y_ptr=st, o_ptr=st, c_ptr="*fp64", M="i32",
              HW="i32", YDIV="i32", NB="i32"), dict(BLOCK=1024))
    print("\\n".join(failed))
    sys.exit(1 if failed else 0)
''')


@pytest.mark.slow  # 61 s with a cold compile cache (2-core CPU), 4 s with a warm one
def test_kernels_compile_for_sm90():
    pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no ASTSource/GPUTarget API")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0 and "ptxas" in out.stderr and "not found" in out.stderr:
        pytest.skip("no ptxas bundled with this triton")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
