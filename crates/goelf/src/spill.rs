//! Where a function's first argument words can be read without a probe at its entry: at
//! every one of its RETs, from the stack, and at its one call of `runtime.memmove`.
//!
//! At a RET, SP points at the return address and the caller's argument area follows it: word
//! w of the arguments is at SP + 8 + 8w. Under Go's stack ABI the arguments live there. Under
//! the register ABI that area holds the registers' spill slots, which the function may fill
//! (the compiler spills an argument live across a call to its own slot) or not. A probe at the
//! RETs alone can therefore read the arguments exactly when, on every path from the entry to
//! every RET:
//! - under the register ABI, word w was stored from a register holding argument w's entry
//!   value (the argument register itself, or a reload of the word);
//! - nothing else wrote that word afterwards, nor took its address.
//!
//! This module decides that by abstract interpretation over the decoded control flow: per
//! instruction, how far SP is below its entry value, which argument words hold their argument,
//! which registers and which other stack slots hold an argument word's value, and where BP
//! points. Anything it cannot follow (an indirect jump, SP changed other than by an immediate,
//! a store through SP with an index, a branch out of the function) makes the proof fail, never
//! pass: a failed proof only costs a probe.
//!
//! The same facts place a cheaper probe (issue 16: the kernel emulates a CALL, ~0.6 µs a hit
//! here, and single-steps a RET out of line, ~10 µs): at a `CALL runtime.memmove` whose
//! destination holds argument word 1 (Read's b.ptr), the call copies the plaintext into the
//! caller's buffer, from the source and length in its other arguments.
//!
//! Must stay true: a RET proof only when every reachable RET is proven; a copy site only when
//! it is the function's one call of the copy routine and its destination is proven; code not
//! reachable by branches (blocks the runtime enters itself, such as a deferreturn after a
//! recovered panic) is analysed as entered at the frame depth of the function's calls with no
//! register or slot value known.

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register,
};

/// amd64 integer argument registers of Go's register ABI (ABIInternal), in order.
const ARG_REGISTERS: [Register; 9] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::RDI,
    Register::RSI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
];

/// The general-purpose registers, indexed as [`State::regs`] is.
const GPRS: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// No argument word (in [`State::regs`] and [`State::slots`]).
const NONE: u8 = u8::MAX;
/// How many stack slots outside the argument words are followed at once.
const SLOTS: usize = 4;
/// The longest function analysed. The analysis keeps a decoded instruction and a state (about
/// 150 bytes together) per instruction: for the 8 MiB goelf allows a function, a crafted file's
/// body of one-byte instructions would take over a gigabyte. Go's `(*Conn).Read` is 1–2 KiB.
const MAX_ANALYSED_BYTES: usize = 64 << 10;

/// Where the arguments are at the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgsAt {
    /// In the registers of [`ARG_REGISTERS`] (their stack words start out unset).
    Registers,
    /// In the stack words already.
    Stack,
}

/// What the analysis proved of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proof {
    /// Whether every RET finds the argument words on the stack; why not.
    pub returns: Result<(), String>,
    /// The one call of the copy routine with argument word 1 as its destination; why none.
    pub copy: Result<CopySite, String>,
}

/// A `CALL` of the copy routine (memmove(dst, src, n)) whose destination is argument word 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopySite {
    /// The CALL instruction's address.
    pub vaddr: u64,
    /// How far SP is below its entry value there: argument word w is at SP + depth + 8 + 8w.
    pub depth: u64,
}

/// What the interpretation knows before one instruction, on every path reaching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// How many bytes SP is below its value at the entry.
    depth: i64,
    /// Bit w: stack word w holds argument w.
    saved: u16,
    /// Per register of [`GPRS`]: the argument word whose entry value it holds, or [`NONE`].
    regs: [u8; 16],
    /// Other stack slots (address relative to the entry SP, argument word) holding an
    /// argument word's value; unused entries are (0, [`NONE`]).
    slots: [(i64, u8); SLOTS],
    /// BP's address relative to the entry SP, when known.
    bp: Option<i64>,
}

impl State {
    /// Entered by the runtime (or at the entry, `depth` 0): nothing known but what is saved.
    fn bare(depth: i64, saved: u16) -> State {
        State { depth, saved, regs: [NONE; 16], slots: [(0, NONE); SLOTS], bp: None }
    }

    /// The facts true on both paths; an error when SP differs between them.
    fn meet(self, other: State, ip: u64) -> Result<State, String> {
        if self.depth != other.depth {
            return Err(format!("SP differs between the paths that reach {ip:#x}"));
        }
        let mut out = State::bare(self.depth, self.saved & other.saved);
        for (i, r) in out.regs.iter_mut().enumerate() {
            if self.regs[i] == other.regs[i] {
                *r = self.regs[i];
            }
        }
        for (n, slot) in self.slots.iter().filter(|s| s.1 != NONE && other.slots.contains(s)).enumerate() {
            out.slots[n] = *slot;
        }
        out.bp = if self.bp == other.bp { self.bp } else { None };
        Ok(out)
    }

    fn reg(&self, r: Register) -> u8 {
        GPRS.iter().position(|&g| g == r.full_register()).map_or(NONE, |i| self.regs[i])
    }

    fn set_reg(&mut self, r: Register, word: u8) {
        if let Some(i) = GPRS.iter().position(|&g| g == r.full_register()) {
            self.regs[i] = word;
        }
    }

    fn slot(&self, at: i64) -> u8 {
        self.slots.iter().find(|s| s.0 == at && s.1 != NONE).map_or(NONE, |s| s.1)
    }

    /// Forgets the slots overlapping `at..at + size`.
    fn clobber_slots(&mut self, at: i64, size: i64) {
        for slot in &mut self.slots {
            if slot.1 != NONE && slot.0 < at + size && at < slot.0 + 8 {
                *slot = (0, NONE);
            }
        }
    }

    /// Remembers that the slot at `at` holds `word` (forgotten when no entry is free).
    fn set_slot(&mut self, at: i64, word: u8) {
        if let Some(free) = self.slots.iter_mut().find(|s| s.1 == NONE) {
            *free = (at, word);
        }
    }
}

/// Analyses the amd64 function `code` (at `vaddr`, INT3 padding included) for argument words
/// `0..words` and, when `copy_routine` is given, its calls of that address. `Err` when the
/// code cannot be followed at all; reasons are for people.
pub(crate) fn analyze(
    vaddr: u64,
    code: &[u8],
    args: ArgsAt,
    words: usize,
    copy_routine: Option<u64>,
) -> Result<Proof, String> {
    if words < 2 || words > ARG_REGISTERS.len() {
        return Err(format!("{words} argument words cannot be proven"));
    }
    if code.len() > MAX_ANALYSED_BYTES {
        return Err(format!("{} bytes of code: more than this analysis follows", code.len()));
    }
    let padding = code.iter().rev().take_while(|&&b| b == 0xcc).count();
    let body = &code[..code.len() - padding];
    let mut decoder = Decoder::with_ip(64, body, vaddr, DecoderOptions::NONE);
    let mut insts = Vec::new();
    while decoder.can_decode() {
        let inst = decoder.decode();
        if inst.is_invalid() {
            return Err(format!("undecodable code at {:#x}", inst.ip()));
        }
        insts.push(inst);
    }
    let all = (1u16 << words) - 1;
    let mut entry = State::bare(0, if args == ArgsAt::Stack { all } else { 0 });
    if args == ArgsAt::Registers {
        for (w, &r) in ARG_REGISTERS.iter().take(words).enumerate() {
            entry.set_reg(r, w as u8);
        }
    }
    let mut flow = Flow {
        insts: &insts,
        states: vec![None; insts.len()],
        words,
        args,
        factory: InstructionInfoFactory::new(),
        steps_left: STEPS_PER_INSTRUCTION.saturating_mul(insts.len()),
    };
    flow.run(0, entry)?;
    // Code no branch reaches is entered by the runtime at the depth of the function's calls
    // (after a recovered panic, say), with what is saved at every call and nothing else known.
    // One pass, one meet: code a crafted file makes all unreachable (a body of RETs) costs
    // linear time, not a search from the start per block.
    let at_calls = flow.calls_meet()?.unwrap_or(State::bare(0, 0));
    for start in 0..insts.len() {
        if flow.states[start].is_none() {
            flow.run(start, State::bare(at_calls.depth, at_calls.saved))?;
        }
    }
    Ok(Proof { returns: flow.returns_proven(all), copy: flow.copy_site(copy_routine) })
}

struct Flow<'a> {
    insts: &'a [Instruction],
    /// The state before each instruction; None while no path has reached it.
    states: Vec<Option<State>>,
    words: usize,
    args: ArgsAt,
    factory: InstructionInfoFactory,
    /// Instructions interpreted before the analysis gives up ([`STEPS_PER_INSTRUCTION`]).
    steps_left: usize,
}

/// A state only loses facts, so each instruction is interpreted a bounded number of times
/// (about 25: the facts it can lose); a crafted body that merges paths all the time is given up
/// past this many per instruction rather than analysed for long.
const STEPS_PER_INSTRUCTION: usize = 32;

impl Flow<'_> {
    fn returns_proven(&self, all: u16) -> Result<(), String> {
        for (inst, state) in self.insts.iter().zip(&self.states) {
            let Some(state) = state else { continue };
            if inst.flow_control() != FlowControl::Return {
                continue;
            }
            if state.depth != 0 {
                return Err(format!(
                    "the RET at {:#x} runs with SP {} bytes off its entry value",
                    inst.ip(),
                    state.depth
                ));
            }
            if state.saved & all != all {
                let missing = (0..self.words).find(|w| state.saved & (1 << w) == 0).unwrap_or(0);
                return Err(format!("argument word {missing} may not be on the stack at the RET at {:#x}", inst.ip()));
            }
        }
        Ok(())
    }

    /// The one call of `routine` whose destination (its first argument: RAX, or the first
    /// outgoing stack word under the stack ABI) holds argument word 1, with word 0 saved.
    fn copy_site(&self, routine: Option<u64>) -> Result<CopySite, String> {
        let routine = routine.ok_or("the binary has no runtime.memmove")?;
        let calls: Vec<(&Instruction, Option<State>)> = self
            .insts
            .iter()
            .zip(&self.states)
            .filter(|(inst, _)| inst.flow_control() == FlowControl::Call && inst.near_branch_target() == routine)
            .map(|(inst, state)| (inst, *state))
            .collect();
        let [(inst, Some(state))] = calls[..] else {
            return Err(format!("{} calls of runtime.memmove, not one", calls.len()));
        };
        let destination = match self.args {
            ArgsAt::Registers => state.reg(Register::RAX),
            ArgsAt::Stack => state.slot(-state.depth),
        };
        if destination != 1 {
            return Err(format!("the destination of the copy at {:#x} is not proven to be b", inst.ip()));
        }
        if state.saved & 1 == 0 {
            return Err(format!("c may not be on the stack at the copy at {:#x}", inst.ip()));
        }
        let depth = u64::try_from(state.depth).map_err(|_| format!("SP above its entry value at {:#x}", inst.ip()))?;
        Ok(CopySite { vaddr: inst.ip(), depth })
    }

    /// Propagates `state` from instruction `start` until nothing changes.
    fn run(&mut self, start: usize, state: State) -> Result<(), String> {
        let mut work = Vec::new();
        self.merge(start, state, &mut work)?;
        while let Some(i) = work.pop() {
            let Some(before) = self.states[i] else { continue };
            self.steps_left = self.steps_left.checked_sub(1).ok_or("the control flow is too tangled to analyse")?;
            let inst = self.insts[i];
            let after = self.step(&inst, before)?;
            for next in self.successors(i, &inst)? {
                self.merge(next, after, &mut work)?;
            }
        }
        Ok(())
    }

    fn merge(&mut self, i: usize, state: State, work: &mut Vec<usize>) -> Result<(), String> {
        let merged = match self.states[i] {
            None => state,
            Some(old) => old.meet(state, self.insts[i].ip())?,
        };
        if self.states[i] != Some(merged) {
            self.states[i] = Some(merged);
            work.push(i);
        }
        Ok(())
    }
    /// What holds at every call reached so far from within the frame (the stack-growth call
    /// before the frame exists is never resumed into other code), or at every call when the
    /// function has no frame. Calls in the frame must agree on SP. None if no call is reached.
    fn calls_meet(&self) -> Result<Option<State>, String> {
        let calls: Vec<(u64, State)> = self
            .insts
            .iter()
            .zip(&self.states)
            .filter(|(inst, _)| matches!(inst.flow_control(), FlowControl::Call | FlowControl::IndirectCall))
            .filter_map(|(inst, state)| state.map(|s| (inst.ip(), s)))
            .collect();
        let in_frame = calls.iter().any(|(_, s)| s.depth > 0);
        let mut out: Option<State> = None;
        for (ip, state) in calls.into_iter().filter(|(_, s)| !in_frame || s.depth > 0) {
            out = Some(match out {
                None => state,
                Some(o) => o.meet(state, ip)?,
            });
        }
        Ok(out)
    }

    fn index_of(&self, ip: u64) -> Option<usize> {
        self.insts.binary_search_by_key(&ip, Instruction::ip).ok()
    }

    fn successors(&self, i: usize, inst: &Instruction) -> Result<Vec<usize>, String> {
        let next = || (i + 1 < self.insts.len()).then_some(i + 1);
        let target = || {
            self.index_of(inst.near_branch_target())
                .ok_or_else(|| format!("the branch at {:#x} leaves the function", inst.ip()))
        };
        Ok(match inst.flow_control() {
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception => Vec::new(),
            FlowControl::UnconditionalBranch => vec![target()?],
            FlowControl::ConditionalBranch => {
                let mut out = vec![target()?];
                out.extend(next());
                out
            }
            FlowControl::IndirectBranch => return Err(format!("indirect jump at {:#x}", inst.ip())),
            FlowControl::XbeginXabortXend => return Err(format!("transaction at {:#x}", inst.ip())),
            // A call returns (or never does: the code after it is then only more conservative).
            FlowControl::Next | FlowControl::Call | FlowControl::IndirectCall => match next() {
                Some(n) => vec![n],
                None if inst.mnemonic() == Mnemonic::Int3 || inst.mnemonic() == Mnemonic::Ud2 => Vec::new(),
                None => return Err(format!("the code falls off the function's end after {:#x}", inst.ip())),
            },
        })
    }

    /// The state after `inst`.
    fn step(&mut self, inst: &Instruction, before: State) -> Result<State, String> {
        let ip = inst.ip();
        let mut after = before;
        let (memory, registers) = {
            let info = self.factory.info(inst);
            (info.used_memory().to_vec(), info.used_registers().to_vec())
        };
        // What a whole-word MOV stores: the argument word its source register holds.
        let stored = is_mov64(inst, OpKind::Memory, OpKind::Register).then(|| before.reg(inst.op1_register()));
        // Memory written: argument words lose their value unless a store puts it back;
        // other slots are followed when a store puts an argument word there.
        for mem in &memory {
            if !writes(mem.access()) {
                continue;
            }
            let Some(at) = stack_address(mem.base(), mem.index(), mem.displacement() as i64, before, ip)? else {
                continue; // not the stack: pointers to the argument words come only from LEA, refused below
            };
            let size = mem.memory_size().size() as i64;
            after.clobber_slots(at, size);
            let mut in_words = false;
            for w in 0..self.words {
                let word = 8 + 8 * w as i64;
                if at < word + 8 && word < at + size {
                    in_words = true;
                    after.saved &= !(1 << w);
                    if at == word && stored == Some(w as u8) {
                        after.saved |= 1 << w;
                    }
                }
            }
            if let (false, Some(word)) = (in_words, stored.filter(|&w| w != NONE)) {
                after.set_slot(at, word);
            }
        }
        // A copy of SP (or of BP, once it points into this frame) into another register is a
        // pointer into the stack that the stores through other registers above are trusted not
        // to be: refused, as LEA of the argument area is below.
        if copies_stack_pointer(inst, before) {
            return Err(format!("a stack pointer is copied at {ip:#x}"));
        }
        if inst.mnemonic() == Mnemonic::Lea {
            if let Some(at) =
                stack_address(inst.memory_base(), inst.memory_index(), inst.memory_displacement64() as i64, before, ip)?
            {
                if at >= 8 {
                    return Err(format!("the argument area's address is taken at {ip:#x}"));
                }
            }
        }
        // Registers written lose what they held; SP and BP are followed.
        let mut sp_written = false;
        for used in &registers {
            if !writes(used.access()) {
                continue;
            }
            after.set_reg(used.register(), NONE);
            match used.register().full_register() {
                Register::RSP => sp_written = true,
                Register::RBP => after.bp = None,
                _ => {}
            }
        }
        if matches!(inst.flow_control(), FlowControl::Call | FlowControl::IndirectCall) {
            // Go's calls clobber every register but SP, BP and g, and may write their own
            // arguments (this frame's outgoing slots).
            after.regs = [NONE; 16];
            after.slots = [(0, NONE); SLOTS];
        }
        if sp_written {
            after.depth = sp_depth_after(inst, before.depth)?;
        }
        after.bp = bp_after(inst, before, after.bp);
        // A whole-word copy into a register carries what its source holds.
        if is_mov64(inst, OpKind::Register, OpKind::Register) {
            after.set_reg(inst.op0_register(), before.reg(inst.op1_register()));
        } else if is_mov64(inst, OpKind::Register, OpKind::Memory) {
            let at =
                stack_address(inst.memory_base(), inst.memory_index(), inst.memory_displacement64() as i64, before, ip)
                    .ok()
                    .flatten();
            let word = at.map_or(NONE, |at| self.word_at(at, before));
            after.set_reg(inst.op0_register(), word);
        }
        Ok(after)
    }

    /// The argument word whose value the stack slot at `at` holds, or [`NONE`].
    fn word_at(&self, at: i64, state: State) -> u8 {
        let w = (at - 8) / 8;
        if at >= 8 && (at - 8) % 8 == 0 && (w as usize) < self.words && state.saved & (1 << w) != 0 {
            return w as u8;
        }
        state.slot(at)
    }
}

/// `inst` reads SP, or BP while it points into the frame, as a value (not as a memory base):
/// anything but the moves of SP this analysis follows (push, pop, call, ret, `SUB`/`ADD` of an
/// immediate, `MOV RBP, RSP`) and comparisons.
fn copies_stack_pointer(inst: &Instruction, before: State) -> bool {
    let reads_as_value = (1..inst.op_count()).any(|i| {
        inst.op_kind(i) == OpKind::Register
            && match inst.op_register(i).full_register() {
                Register::RSP => true,
                Register::RBP => before.bp.is_some(),
                _ => false,
            }
    });
    let followed = matches!(inst.mnemonic(), Mnemonic::Push | Mnemonic::Pop | Mnemonic::Cmp | Mnemonic::Test)
        || (inst.mnemonic() == Mnemonic::Mov
            && inst.op0_register() == Register::RBP
            && inst.op1_register() == Register::RSP);
    reads_as_value && !followed
}

fn writes(access: OpAccess) -> bool {
    matches!(access, OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite)
}

/// A `MOV` of 8 bytes between operands of these kinds.
fn is_mov64(inst: &Instruction, to: OpKind, from: OpKind) -> bool {
    let reg64 = |r: Register| r.is_gpr64();
    inst.mnemonic() == Mnemonic::Mov
        && inst.op_count() == 2
        && inst.op0_kind() == to
        && inst.op1_kind() == from
        && match (to, from) {
            (OpKind::Memory, OpKind::Register) => reg64(inst.op1_register()),
            (OpKind::Register, OpKind::Memory) => reg64(inst.op0_register()),
            (OpKind::Register, OpKind::Register) => reg64(inst.op0_register()) && reg64(inst.op1_register()),
            _ => false,
        }
}

/// The address relative to the entry SP of a memory operand based on SP or BP; None for
/// other bases; an error where it cannot be known (an index register, BP unknown).
fn stack_address(base: Register, index: Register, disp: i64, state: State, ip: u64) -> Result<Option<i64>, String> {
    let from = match base {
        Register::RSP => -state.depth,
        Register::RBP => match state.bp {
            Some(bp) => bp,
            None => return Err(format!("BP-relative memory at {ip:#x} with BP unknown")),
        },
        _ => return Ok(None),
    };
    if index != Register::None {
        return Err(format!("indexed stack memory at {ip:#x}"));
    }
    Ok(Some(from + disp))
}

/// SP's depth after `inst`, which writes SP; an error for any way but an immediate.
fn sp_depth_after(inst: &Instruction, depth: i64) -> Result<i64, String> {
    let imm = || {
        (inst.op_count() == 2 && inst.op0_register() == Register::RSP && is_immediate(inst.op1_kind()))
            .then(|| inst.immediate(1) as i64)
    };
    let moved = match inst.mnemonic() {
        Mnemonic::Push | Mnemonic::Pushfq => Some(8),
        Mnemonic::Pop | Mnemonic::Popfq if inst.op0_register() != Register::RSP => Some(-8),
        // A call pushes and its callee's RET pops; a RET leaves the function.
        Mnemonic::Call | Mnemonic::Ret => Some(0),
        Mnemonic::Sub => imm(),
        Mnemonic::Add => imm().map(|v| -v),
        _ => None,
    };
    moved.map(|m| depth + m).ok_or_else(|| format!("SP changed by {:?} at {:#x}", inst.mnemonic(), inst.ip()))
}

fn is_immediate(kind: OpKind) -> bool {
    matches!(kind, OpKind::Immediate8to64 | OpKind::Immediate32to64 | OpKind::Immediate8 | OpKind::Immediate32)
}

/// BP after `inst`: set from SP (`MOV RBP, RSP`, `LEA RBP, [RSP+d]`), else as the register
/// writes left it (`written`: None when written otherwise).
fn bp_after(inst: &Instruction, before: State, written: Option<i64>) -> Option<i64> {
    if inst.op_count() != 2 || inst.op0_kind() != OpKind::Register || inst.op0_register() != Register::RBP {
        return written;
    }
    match inst.mnemonic() {
        Mnemonic::Mov if inst.op1_kind() == OpKind::Register && inst.op1_register() == Register::RSP => {
            Some(-before.depth)
        }
        Mnemonic::Lea if inst.memory_base() == Register::RSP && inst.memory_index() == Register::None => {
            Some(-before.depth + inst.memory_displacement64() as i64)
        }
        _ => written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assembles amd64 instructions given as byte strings.
    fn code(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    const CMP_STACK: &[u8] = &[0x49, 0x3b, 0x66, 0x10]; // cmp rsp, [r14+0x10]
    const PUSH_RBP: &[u8] = &[0x55];
    const MOV_RBP_RSP: &[u8] = &[0x48, 0x89, 0xe5];
    const SUB_RSP_0X60: &[u8] = &[0x48, 0x83, 0xec, 0x60];
    const ADD_RSP_0X60: &[u8] = &[0x48, 0x83, 0xc4, 0x60];
    const POP_RBP: &[u8] = &[0x5d];
    const RET: &[u8] = &[0xc3];
    const SPILL_RAX: &[u8] = &[0x48, 0x89, 0x44, 0x24, 0x70]; // mov [rsp+0x70], rax (word 0)
    const SPILL_RBX: &[u8] = &[0x48, 0x89, 0x5c, 0x24, 0x78]; // mov [rsp+0x78], rbx (word 1)
    const CALL_0: &[u8] = &[0xe8, 0, 0, 0, 0]; // call (next instruction)
    const XOR_EAX: &[u8] = &[0x31, 0xc0];
    const EPILOGUE: &[&[u8]] = &[ADD_RSP_0X60, POP_RBP, RET];

    fn prove(parts: &[&[u8]], args: ArgsAt) -> Result<(), String> {
        analyze(0x1000, &code(parts), args, 2, None).and_then(|p| p.returns)
    }

    /// The copy site of `parts`, whose copy routine is what `call_memmove` calls.
    fn copy_site(parts: &[&[u8]], args: ArgsAt) -> Result<CopySite, String> {
        let code = code(parts);
        // The one `call rel32` with displacement 0x1000 in the test code.
        let at = code.windows(5).position(|w| w == CALL_MEMMOVE).ok_or("no call")?;
        let routine = 0x1000 + at as u64 + 5 + 0x1000;
        analyze(0x1000, &code, args, 2, Some(routine)).and_then(|p| p.copy)
    }

    const CALL_MEMMOVE: &[u8] = &[0xe8, 0x00, 0x10, 0x00, 0x00]; // call +0x1000 (outside the code)
    const RELOAD_RAX_WORD1: &[u8] = &[0x48, 0x8b, 0x44, 0x24, 0x78]; // mov rax, [rsp+0x78]

    /// Go's register-ABI shape: b.ptr reloaded from its saved word into RAX, the copy's
    /// destination, just before the call; c saved in word 0.
    #[test]
    fn the_copy_into_b_is_found() {
        let body = [PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, CALL_0, RELOAD_RAX_WORD1, CALL_MEMMOVE];
        let parts = [&body[..], EPILOGUE].concat();
        let site = copy_site(&parts, ArgsAt::Registers).unwrap();
        assert_eq!(site.depth, 0x68);
        assert_eq!(site.vaddr, 0x1000 + (1 + 4 + 5 + 5 + 5 + 5) as u64);
        // The destination copied through another register still counts.
        let mov_rdi_rax: &[u8] = &[0x48, 0x89, 0xc7]; // mov rdi, rax
        let mov_rax_rdi: &[u8] = &[0x48, 0x89, 0xf8]; // mov rax, rdi
        let body =
            [PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, RELOAD_RAX_WORD1, mov_rdi_rax, mov_rax_rdi, CALL_MEMMOVE];
        assert!(copy_site(&[&body[..], EPILOGUE].concat(), ArgsAt::Registers).is_ok());
    }

    #[test]
    fn a_copy_elsewhere_is_not_taken() {
        // RAX not b.ptr (reloaded word 0, c, instead).
        let reload_word0: &[u8] = &[0x48, 0x8b, 0x44, 0x24, 0x70]; // mov rax, [rsp+0x70]
        let body = [PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, reload_word0, CALL_MEMMOVE];
        let err = copy_site(&[&body[..], EPILOGUE].concat(), ArgsAt::Registers).unwrap_err();
        assert!(err.contains("not proven to be b"), "{err}");
        // Two copies: which one is Read's is not known.
        let body = [PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, RELOAD_RAX_WORD1, CALL_MEMMOVE, RELOAD_RAX_WORD1];
        let second: &[u8] = &[0xe8, 0xf6, 0x0f, 0x00, 0x00]; // the same target, 10 bytes on
        let err = copy_site(&[&body[..], &[second], EPILOGUE].concat(), ArgsAt::Registers).unwrap_err();
        assert!(err.contains("2 calls"), "{err}");
        // c not saved at the copy.
        let body = [PUSH_RBP, SUB_RSP_0X60, SPILL_RBX, RELOAD_RAX_WORD1, CALL_MEMMOVE];
        let err = copy_site(&[&body[..], EPILOGUE].concat(), ArgsAt::Registers).unwrap_err();
        assert!(err.contains("c may not"), "{err}");
    }

    /// Go 1.15's shape: b.ptr loaded from its argument word and stored as the copy's first
    /// outgoing stack argument.
    #[test]
    fn the_copy_into_b_is_found_under_the_stack_abi() {
        let sub_rsp_0x58: &[u8] = &[0x48, 0x83, 0xec, 0x58];
        let add_rsp_0x58: &[u8] = &[0x48, 0x83, 0xc4, 0x58];
        let load_rdi_word1: &[u8] = &[0x48, 0x8b, 0x7c, 0x24, 0x68]; // mov rdi, [rsp+0x68]
        let store_rdi_out0: &[u8] = &[0x48, 0x89, 0x3c, 0x24]; // mov [rsp], rdi
        let body = [sub_rsp_0x58, load_rdi_word1, store_rdi_out0, CALL_MEMMOVE, add_rsp_0x58, RET];
        let site = copy_site(&body, ArgsAt::Stack).unwrap();
        assert_eq!(site.depth, 0x58);
        // The outgoing word overwritten before the call.
        let zero_out0: &[u8] = &[0x48, 0xc7, 0x04, 0x24, 0, 0, 0, 0]; // mov qword [rsp], 0
        let body = [sub_rsp_0x58, load_rdi_word1, store_rdi_out0, zero_out0, CALL_MEMMOVE, add_rsp_0x58, RET];
        assert!(copy_site(&body, ArgsAt::Stack).is_err());
    }

    /// Go 1.21+'s shape: push rbp; mov rbp, rsp; sub rsp; spills; a call; the epilogue.
    #[test]
    fn spills_in_the_entry_block_are_proven() {
        let parts =
            [&[CMP_STACK, PUSH_RBP, MOV_RBP_RSP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, CALL_0][..], EPILOGUE].concat();
        assert_eq!(prove(&parts, ArgsAt::Registers), Ok(()));
    }

    #[test]
    fn a_missing_spill_fails() {
        let parts = [&[PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, CALL_0][..], EPILOGUE].concat();
        let err = prove(&parts, ArgsAt::Registers).unwrap_err();
        assert!(err.contains("word 1"), "{err}");
    }

    #[test]
    fn a_spill_of_a_clobbered_register_fails() {
        let parts = [&[PUSH_RBP, SUB_RSP_0X60, XOR_EAX, SPILL_RAX, SPILL_RBX][..], EPILOGUE].concat();
        let err = prove(&parts, ArgsAt::Registers).unwrap_err();
        assert!(err.contains("word 0"), "{err}");
        // After a call too: Go's calls clobber every argument register.
        let parts = [&[PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, CALL_0, SPILL_RBX][..], EPILOGUE].concat();
        assert!(prove(&parts, ArgsAt::Registers).unwrap_err().contains("word 1"));
    }

    /// A spill on one branch only does not hold at the RET both branches reach.
    #[test]
    fn a_spill_on_one_path_only_fails() {
        let je_over_spill: &[u8] = &[0x74, 0x05]; // je +5 (over the 5-byte spill)
        let parts = [&[PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, je_over_spill, SPILL_RBX][..], EPILOGUE].concat();
        assert!(prove(&parts, ArgsAt::Registers).unwrap_err().contains("word 1"));
    }

    #[test]
    fn a_later_overwrite_fails() {
        let zero_word1: &[u8] = &[0x48, 0xc7, 0x44, 0x24, 0x78, 0, 0, 0, 0]; // mov qword [rsp+0x78], 0
        let parts = [&[PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, CALL_0, zero_word1][..], EPILOGUE].concat();
        assert!(prove(&parts, ArgsAt::Registers).unwrap_err().contains("word 1"));
        // Under the stack ABI, the words hold the arguments until something writes them.
        let at_entry: &[u8] = &[0x48, 0xc7, 0x44, 0x24, 0x10, 0, 0, 0, 0]; // mov qword [rsp+0x10], 0
        assert_eq!(prove(&[RET], ArgsAt::Stack), Ok(()));
        assert!(prove(&[at_entry, RET], ArgsAt::Stack).unwrap_err().contains("word 1"));
    }

    #[test]
    fn taking_the_argument_area_s_address_fails() {
        let lea: &[u8] = &[0x48, 0x8d, 0x7c, 0x24, 0x70]; // lea rdi, [rsp+0x70]
        let parts = [&[PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, lea][..], EPILOGUE].concat();
        assert!(prove(&parts, ArgsAt::Registers).unwrap_err().contains("address"));
    }

    /// SP copied into another register (then written through) is refused.
    #[test]
    fn a_copy_of_the_stack_pointer_fails() {
        let mov_rdi_rsp: &[u8] = &[0x48, 0x89, 0xe7]; // mov rdi, rsp
        let parts = [&[PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, mov_rdi_rsp][..], EPILOGUE].concat();
        assert!(prove(&parts, ArgsAt::Registers).unwrap_err().contains("stack pointer is copied"));
        // Go 1.21+'s frame pointer setup is followed, not refused.
        let parts = [&[PUSH_RBP, MOV_RBP_RSP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX][..], EPILOGUE].concat();
        assert_eq!(prove(&parts, ArgsAt::Registers), Ok(()));
    }

    #[test]
    fn unfollowable_code_fails() {
        let jmp_rax: &[u8] = &[0xff, 0xe0];
        assert!(prove(&[SPILL_RAX, jmp_rax], ArgsAt::Registers).unwrap_err().contains("indirect"));
        let sub_rsp_rax: &[u8] = &[0x48, 0x29, 0xc4];
        assert!(prove(&[sub_rsp_rax, RET], ArgsAt::Stack).unwrap_err().contains("SP changed"));
        // A RET with the frame still allocated.
        assert!(prove(&[SUB_RSP_0X60, RET], ArgsAt::Stack).unwrap_err().contains("SP"));
    }

    /// The stack-growth path spills, calls morestack, reloads and jumps back to the entry: the
    /// registers it reloads count as intact again.
    #[test]
    fn the_morestack_path_keeps_the_proof() {
        let jbe: &[u8] = &[0x76, 0x15]; // jbe +0x15: to the morestack block below
        let spill8: &[u8] = &[0x48, 0x89, 0x44, 0x24, 0x08]; // mov [rsp+8], rax
        let spill16: &[u8] = &[0x48, 0x89, 0x5c, 0x24, 0x10]; // mov [rsp+0x10], rbx
        let reload8: &[u8] = &[0x48, 0x8b, 0x44, 0x24, 0x08]; // mov rax, [rsp+8]
        let reload16: &[u8] = &[0x48, 0x8b, 0x5c, 0x24, 0x10]; // mov rbx, [rsp+0x10]
        let body = [CMP_STACK, jbe, PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, ADD_RSP_0X60, POP_RBP, RET].concat();
        assert_eq!(body.len(), 6 + 0x15);
        let back = -(body.len() as i32 + 25 + 5);
        let jmp_back: Vec<u8> = [&[0xe9u8][..], &back.to_le_bytes()].concat();
        let parts = [&body[..], spill8, spill16, CALL_0, reload8, reload16, &jmp_back].concat();
        assert_eq!(prove(&[&parts[..]], ArgsAt::Registers), Ok(()));
    }

    /// A function longer than any Go Read is not analysed (its states would take memory in
    /// proportion); the caller falls back to the probes that need no proof.
    #[test]
    fn a_function_past_the_size_bound_is_not_analysed() {
        let code = vec![0x90u8; MAX_ANALYSED_BYTES + 1];
        assert!(analyze(0, &code, ArgsAt::Stack, 2, None).unwrap_err().contains("more than this analysis follows"));
    }

    /// A body of unreachable blocks (a crafted file) is analysed in linear time.
    #[test]
    fn many_unreachable_blocks_are_analysed_in_one_pass() {
        let code = vec![0xc3u8; MAX_ANALYSED_BYTES]; // every RET after the first unreachable
        let started = std::time::Instant::now();
        // Unreachable code with no call to resume after is not proven: what matters is the time.
        assert!(args_at_returns_only(&code).unwrap_err().contains("RET at 0x1"));
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    }

    fn args_at_returns_only(code: &[u8]) -> Result<(), String> {
        analyze(0, code, ArgsAt::Stack, 2, None).and_then(|p| p.returns)
    }

    /// A block only the runtime enters (deferreturn after a recovered panic) is analysed as
    /// entered at the calls' depth: the spills before every call still count.
    #[test]
    fn blocks_no_branch_reaches_are_analysed_too() {
        let parts =
            [&[PUSH_RBP, SUB_RSP_0X60, SPILL_RAX, SPILL_RBX, CALL_0][..], EPILOGUE, &[CALL_0], EPILOGUE].concat();
        assert_eq!(prove(&parts, ArgsAt::Registers), Ok(()));
        let parts =
            [&[PUSH_RBP, SUB_RSP_0X60, CALL_0, SPILL_RAX, SPILL_RBX][..], EPILOGUE, &[CALL_0], EPILOGUE].concat();
        assert!(prove(&parts, ArgsAt::Registers).is_err());
    }
}
