// RDMA memory registration (DESIGN §5, issue 8): ibv_reg_mr, ibv_reg_mr_iova, ibv_reg_mr_iova2 and
// ibv_dereg_mr, interposed with opaque pointers (no rdma-core headers).
//
// rdma-core ≥ 33 makes `ibv_reg_mr` in <infiniband/verbs.h> a macro around an inline
// __ibv_reg_mr() that calls the exported ibv_reg_mr (IBVERBS_1.1) or, for access flags that need
// it (IBV_ACCESS_OPTIONAL_RANGE), ibv_reg_mr_iova2 (IBVERBS_1.8); ibv_reg_mr_iova likewise. All
// three exported entry points are hooked, so every path of the macros is seen once (a nested call
// inside libibverbs runs under the shim's recursion guard and passes straight through).
//
// Guarded pass-through: the real call is made; when it fails with ENOMEM/EAGAIN/EPERM (lock budget,
// driver limits) the pool's mode applies (fail-fast: NULL with the errno; timeout/block: retry in
// rounds). Registration time goes to source_calls / source_ns, registered (pinned) bytes to
// in_use / bytes_in_use of the pool with match = { call = "ibverbs" } (or the default record).
//
// Fork: the shim never calls madvise on a registered range. rdma-core's ibv_fork_init() marks
// registered ranges MADV_DONTFORK itself where that is needed; where the kernel copies pinned pages
// on fork (ibv_is_fork_initialized() == IBV_FORK_UNNEEDED, Linux ≥ 5.13) nothing must be added, and
// the shim adds nothing in either case.
#pragma once
