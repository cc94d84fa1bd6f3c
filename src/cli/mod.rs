//! The `banshare` command: argument types in [`args`], what each command
//! does in [`commands`].

pub mod args;
pub mod commands;
