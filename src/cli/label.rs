//! How the CLI names a job to a person: `#42` in tables and messages, `42`
//! as the argument to type into the next command (the full id when the
//! server predates job numbers). Below [`super::output`] and
//! [`super::exit`], which both print job names.

use crate::model::Job;

/// The short name tables and messages use for a job: `#42` (its full id
/// when the server predates job numbers).
pub fn job_number(j: &Job) -> String {
    if j.number > 0 {
        format!("#{}", j.number)
    } else {
        j.id.to_string()
    }
}

/// What to type to name `j` in another command: its number, or its id
/// when the server predates numbers.
pub fn job_arg(j: &Job) -> String {
    if j.number > 0 {
        j.number.to_string()
    } else {
        j.id.to_string()
    }
}
