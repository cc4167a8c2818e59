//! The effective configuration: the command line and environment as clap reads them, with
//! the configuration file's settings for everything neither gave; and its rendering for
//! `serve --print-config`, each value with where it came from and secrets masked.

use std::{collections::BTreeMap, ffi::OsString};

use clap::{error::ErrorKind, parser::ValueSource, ArgAction, CommandFactory, FromArgMatches};

use super::{file, Cli, Command};

/// The command line of this process, with `serve --config`'s file applied; on an error, the
/// message (naming the flag, key or variable) and exit, as clap does.
pub fn parse() -> Cli {
    try_parse(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] of `args` (the program name first).
///
/// # Errors
/// As clap's, and the configuration file's ([`file::read`]) as a clap error.
pub fn try_parse(mut args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&args)?;
    let Some(("serve", serve)) = matches.subcommand() else {
        return Cli::from_arg_matches(&matches);
    };
    let serve_command = command
        .find_subcommand("serve")
        .expect("serve is a subcommand");
    let by_long = |flag: &str| {
        serve_command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag) && !matches!(flag, "config" | "print-config"))
    };
    // Flag → the file key its value came from.
    let mut from_file: BTreeMap<String, String> = BTreeMap::new();
    if let Some(path) = serve.get_one::<std::path::PathBuf>("config") {
        let settings = file::read(path, |flag| by_long(flag).is_some())
            .map_err(|e| clap::Error::raw(ErrorKind::InvalidValue, format!("{e}\n")))?;
        // Later settings win (`serve:` over `executor:`).
        let mut last: BTreeMap<String, file::Setting> = BTreeMap::new();
        for setting in settings {
            last.insert(setting.flag.clone(), setting);
        }
        for (flag, setting) in last {
            let arg = by_long(&flag).expect("known flags only");
            let id = arg.get_id().as_str();
            if matches!(
                serve.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                match setting.values.as_slice() {
                    [v] if v == "true" => args.push(format!("--{flag}").into()),
                    [v] if v == "false" => continue,
                    _ => {
                        return Err(clap::Error::raw(
                            ErrorKind::InvalidValue,
                            format!("{}: must be true or false\n", setting.key),
                        ))
                    }
                }
            } else {
                match arg.get_value_delimiter() {
                    Some(delimiter) => args.push(
                        format!("--{flag}={}", setting.values.join(&delimiter.to_string())).into(),
                    ),
                    None => {
                        for value in &setting.values {
                            args.push(format!("--{flag}={value}").into());
                        }
                    }
                }
            }
            from_file.insert(id.to_string(), setting.key);
        }
    }
    let matches = command.clone().try_get_matches_from(&args).map_err(|e| {
        // A bad value from the file: say which key it came from.
        let named = from_file
            .values()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if from_file.is_empty() {
            e
        } else {
            let rendered = e.render().to_string();
            let message = rendered.strip_prefix("error: ").unwrap_or(&rendered);
            clap::Error::raw(
                e.kind(),
                format!("{message}(settings from the configuration file: {named})\n"),
            )
        }
    })?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Serve(args), Some(("serve", serve))) = (&mut cli.command, matches.subcommand())
    {
        args.effective_config = render(serve_command, serve, &from_file);
    }
    Ok(cli)
}

/// Every `serve` setting as YAML under `serve:`, with its source in a comment.
fn render(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    from_file: &BTreeMap<String, String>,
) -> String {
    let mut out = String::from(
        "# executor-service serve: the effective configuration (secrets masked)\nserve:\n",
    );
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version" | "print-config") || arg.is_hide_set() {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| {
                raw.map(|v| mask_secrets(long, &v.to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        let source = match (from_file.get(id), matches.value_source(id)) {
            (Some(key), _) => format!("file: {key}"),
            (None, Some(ValueSource::CommandLine)) => "command line".into(),
            (None, Some(ValueSource::EnvVariable)) => arg
                .get_env()
                .map(|e| format!("environment: {}", e.to_string_lossy()))
                .unwrap_or_else(|| "environment".into()),
            (None, Some(ValueSource::DefaultValue)) => "default".into(),
            _ => "unset".into(),
        };
        let quoted = |v: &String| serde_json::to_string(v).unwrap_or_default();
        let value = match values.as_slice() {
            [] => "null".to_string(),
            [one] if arg.get_value_delimiter().is_none() => quoted(one),
            many => format!(
                "[{}]",
                many.iter().map(quoted).collect::<Vec<_>>().join(", ")
            ),
        };
        out.push_str(&format!("  {long}: {value}  # {source}\n"));
    }
    out
}

/// `value` of setting `flag` with its secrets replaced by `****`: the password of a URL's
/// user information, and the values of Kafka options whose names say they are secret.
pub fn mask_secrets(flag: &str, value: &str) -> String {
    if flag == "kafka-option" {
        if let Some((key, _)) = value.split_once('=') {
            let lower = key.to_ascii_lowercase();
            if ["password", "secret", "key", "token", "jaas"]
                .iter()
                .any(|word| lower.contains(word))
                && !lower.ends_with(".location")
            {
                return format!("{key}=****");
            }
        }
        return value.to_string();
    }
    let Some(scheme_end) = value.find("://") else {
        return value.to_string();
    };
    let rest = &value[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return value.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:****{}", &value[..scheme_end + 3], &rest[at..]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_secrets;

    #[test]
    fn passwords_are_masked_and_nothing_else() {
        assert_eq!(
            mask_secrets(
                "store",
                "postgres://executor_user:p%40ss@db:5432/action_history"
            ),
            "postgres://executor_user:****@db:5432/action_history"
        );
        assert_eq!(
            mask_secrets("store", "postgres://db:5432/x"),
            "postgres://db:5432/x"
        );
        assert_eq!(
            mask_secrets("kafka-option", "sasl.password=hunter2"),
            "sasl.password=****"
        );
        assert_eq!(
            mask_secrets("kafka-option", "ssl.ca.location=/ca.pem"),
            "ssl.ca.location=/ca.pem"
        );
        assert_eq!(mask_secrets("workers", "4"), "4");
    }
}
