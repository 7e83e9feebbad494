//! Exit statuses: every stage's outcome says which one it stands for, so the command line maps
//! them in one place (see the README's table for each command).

/// Everything worked (or there was nothing to do).
pub const SUCCESS: u8 = 0;
/// The work failed; what was done is reported.
pub const FAILURE: u8 = 1;
/// Bad input, or a policy said no (drift, changes with `--exit-code`): nothing was written.
pub const REFUSED: u8 = 2;
/// A wait ran out of time; the objects still waited for are named.
pub const TIMEOUT: u8 = 3;
/// Ctrl-C: stopped, nothing written.
pub const INTERRUPTED: u8 = 130;

/// The exit status an outcome stands for.
pub trait ExitStatus {
    fn exit_code(&self) -> u8;
}
