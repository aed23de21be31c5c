//! The allow-list as a seccomp BPF program that is cheap for the kernel to
//! take: a balanced search tree over the syscall numbers.
//!
//! # Why not seccompiler's program
//! seccompiler compiles a rule map into a chain that tests the syscalls one
//! after the other, 390 instructions for this list. Loading it is not free:
//! the kernel checks and JIT-compiles every instruction, and (since 5.11)
//! runs the program once for every syscall number to fill its cache of
//! always-allowed calls, each run walking the chain. Measured here on one
//! machine, in a forked child each time: seccompiler's filter took
//! 270–400 µs to load and 50–90 µs to build; this tree (about 110
//! instructions, at most ~9 on any path) 60–100 µs and 30–50 µs (in a
//! fresh child most of the build is first-touch page faults). That load
//! sits on every driver start, so on every restart's critical path.
//!
//! The program is applied with seccompiler's [`seccompiler::apply_filter`],
//! and its tests check it against seccompiler's own program: both give the
//! same verdict for every syscall number and architecture tried.
//!
//! # Designs rejected
//! - One `jeq` per syscall in a chain (83 instructions): smaller, but the
//!   kernel's cache fill walks the whole chain for every number it is not
//!   on, so it loaded slower than the tree (124–176 µs).
//! - Building the program at compile time: a `const` table would have to be
//!   kept in step with [`crate::allowed_syscalls`] by hand, for tens of
//!   microseconds a start.

use seccompiler::{BpfProgram, sock_filter};

/// `BPF_LD | BPF_W | BPF_ABS` (class, size and mode 0, 0 and 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const BPF_JEQ_K: u16 = 0x05 | 0x10;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const BPF_JGE_K: u16 = 0x05 | 0x30;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)` and `…, arch`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Leaves test this many numbers one by one: past ~4, a comparison more in
/// the tree is cheaper than the `jeq`s it saves.
const LEAF: usize = 4;

/// `AUDIT_ARCH_*` of the architectures seccompiler supports.
fn audit_arch(arch: &str) -> Option<u32> {
    const LE64: u32 = 0x8000_0000 | 0x4000_0000;
    match arch {
        "x86_64" => Some(62 | LE64),
        "aarch64" => Some(183 | LE64),
        "riscv64" => Some(243 | LE64),
        _ => None,
    }
}

/// Where a jump of the tree goes before offsets are known.
#[derive(Clone, Copy)]
enum Target {
    At(usize),
    Allow,
    Kill,
}

struct Node {
    code: u16,
    k: u32,
    jt: Target,
    jf: Target,
}

/// Emits the tree for sorted, distinct `nrs` (non-empty) into `out`.
fn tree(nrs: &[u32], out: &mut Vec<Node>) {
    if nrs.len() <= LEAF {
        for (i, &nr) in nrs.iter().enumerate() {
            let next = if i + 1 == nrs.len() { Target::Kill } else { Target::At(out.len() + 1) };
            out.push(Node { code: BPF_JEQ_K, k: nr, jt: Target::Allow, jf: next });
        }
        return;
    }
    let mid = nrs.len() / 2;
    let at = out.len();
    // nr >= nrs[mid]: the upper half (its offset is known once the lower is out).
    out.push(Node { code: BPF_JGE_K, k: nrs[mid], jt: Target::Kill, jf: Target::At(at + 1) });
    tree(&nrs[..mid], out);
    out[at].jt = Target::At(out.len());
    tree(&nrs[mid..], out);
}

/// The program that allows exactly `nrs` on `arch` (`std::env::consts::ARCH`
/// spelling) and kills the process for any other call or architecture.
///
/// # Errors
/// An architecture seccomp is not supported on here, an empty list, a
/// number that is not a syscall number, or a list so long that a jump no
/// longer fits BPF's 8-bit offsets.
pub fn allow_list(arch: &str, nrs: &[i64]) -> Result<BpfProgram, String> {
    let audit = audit_arch(arch).ok_or_else(|| format!("no seccomp support for architecture {arch}"))?;
    let mut sorted = nrs
        .iter()
        .map(|&n| u32::try_from(n).map_err(|_| format!("{n} is not a syscall number")))
        .collect::<Result<Vec<u32>, String>>()?;
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return Err("an empty allow-list".into());
    }
    let mut body = Vec::new();
    tree(&sorted, &mut body);
    let (allow, kill) = (body.len(), body.len() + 1);
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, ARCH),
        jump(BPF_JEQ_K, audit, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, NR),
    ];
    for (i, n) in body.iter().enumerate() {
        let offset = |t: Target| {
            let to = match t {
                Target::At(to) => to,
                Target::Allow => allow,
                Target::Kill => kill,
            };
            u8::try_from(to - i - 1).map_err(|_| format!("allow-list of {} calls too long for one BPF jump", nrs.len()))
        };
        prog.push(jump(n.code, n.k, offset(n.jt)?, offset(n.jf)?));
    }
    prog.push(stmt(BPF_RET_K, RET_ALLOW));
    prog.push(stmt(BPF_RET_K, RET_KILL_PROCESS));
    Ok(prog)
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Runs classic BPF `prog` on a `seccomp_data` of (`nr`, `arch`), as the
    /// kernel would; only the instructions the two compilers emit.
    fn run(prog: &[sock_filter], nr: u32, arch: u32) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            pc += 1;
            let class = i.code & 0x07;
            match class {
                0x00 => {
                    assert_eq!(i.code, BPF_LD_W_ABS, "only word loads from seccomp_data");
                    a = match i.k {
                        NR => nr,
                        ARCH => arch,
                        k => panic!("load of seccomp_data offset {k}: no argument rules here"),
                    };
                }
                0x05 => {
                    let taken = match i.code & 0xf0 {
                        0x00 => {
                            pc += i.k as usize;
                            continue;
                        }
                        0x10 => a == i.k,
                        0x20 => a > i.k,
                        0x30 => a >= i.k,
                        0x40 => a & i.k != 0,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x06 => return i.k,
                c => panic!("instruction class {c:#x}"),
            }
        }
    }

    fn seccompilers(arch: &str, nrs: &[i64]) -> BpfProgram {
        let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = nrs.iter().map(|&n| (n, Vec::new())).collect();
        let f = seccompiler::SeccompFilter::new(
            rules,
            seccompiler::SeccompAction::KillProcess,
            seccompiler::SeccompAction::Allow,
            seccompiler::TargetArch::try_from(arch).unwrap(),
        )
        .unwrap();
        f.try_into().unwrap()
    }

    /// Numbers worth trying: every plausible syscall, the x32 ones (bit 30,
    /// which x86_64's audit arch does not tell apart), and the extremes.
    fn probes() -> impl Iterator<Item = u32> {
        (0..1100).chain((0..600).map(|n| n | 0x4000_0000)).chain([u32::MAX, u32::MAX - 1, 0x8000_0000])
    }

    #[test]
    fn the_tree_gives_seccompilers_verdict_for_every_call_and_arch() {
        let nrs = crate::allowed_syscalls();
        for arch in ["x86_64", "aarch64", "riscv64"] {
            let ours = allow_list(arch, &nrs).unwrap();
            let theirs = seccompilers(arch, &nrs);
            assert!(ours.len() * 3 < theirs.len(), "{} instructions against {}", ours.len(), theirs.len());
            for a in
                ["x86_64", "aarch64", "riscv64"].map(|a| audit_arch(a).unwrap()).into_iter().chain([0, 0x4000_0003])
            {
                for nr in probes() {
                    assert_eq!(run(&ours, nr, a), run(&theirs, nr, a), "{arch} filter, arch {a:#x}, syscall {nr}");
                }
            }
        }
    }

    #[test]
    fn every_size_of_list_allows_its_calls_and_nothing_else() {
        // Sizes around the leaf and tree boundaries, numbers spread out.
        for len in [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 64, 100] {
            let nrs: Vec<i64> = (0..len).map(|i| i * 3 + 1).collect();
            let prog = allow_list("x86_64", &nrs).unwrap();
            let arch = audit_arch("x86_64").unwrap();
            for nr in probes() {
                let allowed = nrs.contains(&i64::from(nr));
                let want = if allowed { RET_ALLOW } else { RET_KILL_PROCESS };
                assert_eq!(run(&prog, nr, arch), want, "{len} calls, syscall {nr}");
            }
        }
    }

    #[test]
    fn bad_lists_are_refused_with_what_is_wrong() {
        assert!(allow_list("sparc", &[1]).unwrap_err().contains("sparc"));
        assert!(allow_list("x86_64", &[]).unwrap_err().contains("empty"));
        assert!(allow_list("x86_64", &[-1]).unwrap_err().contains("-1"));
        let huge: Vec<i64> = (0..400).collect();
        assert!(allow_list("x86_64", &huge).unwrap_err().contains("too long"));
    }
}
