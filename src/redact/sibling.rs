//! Secrets named by a sibling: the record shapes no key scrubber catches.
//!
//! `config_changed` details carry the secret's *name* in a value:
//! `{"key": "llm.api_key", "old_value": "sk-...", "new_value": "sk-..."}`;
//! Kubernetes env lists and HAR headers do the same
//! (`{"name": "Authorization", "value": "Bearer ..."}`), and header or env
//! lists come as `[name, value]` pairs. Both walkers use these helpers, so
//! the Python and JSON paths agree.

use super::keys::KeyInfo;
use super::Rules;

/// Collects, while one mapping is walked, whether a name field names a
/// secret and which entries carry the value. `K` is the walker's key type.
#[derive(Debug)]
pub struct Record<K> {
    secret_name: bool,
    value_keys: Vec<K>,
}

impl<K> Default for Record<K> {
    fn default() -> Self {
        Self { secret_name: false, value_keys: Vec::new() }
    }
}

impl<K> Record<K> {
    /// Notes one entry: `name_text` is the entry's value when it is text.
    pub fn note(&mut self, rules: &Rules, info: KeyInfo, key: impl FnOnce() -> K, name_text: Option<&str>) {
        if info.name_field && !self.secret_name {
            if let Some(name) = name_text {
                self.secret_name = rules.key_is_secret(name);
            }
        }
        if info.value_field {
            self.value_keys.push(key());
        }
    }

    /// The entries to mask: those carrying the value, when the record names a secret.
    pub fn finish(self) -> Vec<K> {
        if self.secret_name {
            self.value_keys
        } else {
            Vec::new()
        }
    }
}

/// Whether a two-element `[name, value]` item has a secret name.
pub fn pair_is_secret(rules: &Rules, name: &str) -> bool {
    rules.key_is_secret(name)
}

/// Whether an argument-list item is a flag with a secret name (`--password`,
/// `-storepass`, `--api-key`): the item after it is its value, as in the
/// text shape `--password pw`. An item that does not start with `-` costs
/// one byte's check.
pub fn flag_is_secret(rules: &Rules, item: &str) -> bool {
    let Some(name) = item.strip_prefix("--").or_else(|| item.strip_prefix('-')) else { return false };
    let b = name.as_bytes();
    // The text shape's flag name: a letter or digit, then word characters, `.` and `-`.
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && rules.key_is_secret(name)
}

/// What an argument list's item is: its own text, or (part of) a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgItem {
    /// Not known to be a secret: walked as any text.
    Plain,
    /// A secret flag's value: masked whole.
    Secret,
    /// A flag or value whose text holds a secret from this byte on (`-pSecret`
    /// after its `-p`, `user:pw` after its colon): that part is masked.
    SecretFrom(usize),
}

/// How a command's short flag gives its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// The next item is the secret (`sshpass -p pw`).
    Next,
    /// The next item is `user<sep>secret` (`curl -u user:pw`).
    NextAfter(u8),
    /// The secret is glued to the flag (`mysql -ppw`).
    Glued,
    /// The flag is glued to `name<sep>secret` (`--from-literal=name=pw`).
    GluedAfter(u8),
}

/// The short flags a command's name makes secret, where the flag means a
/// secret whatever the subcommand (not `docker -p`, a port for `docker run`):
/// the same commands the text shape knows. `mysql -p` alone prompts, so only
/// its glued form carries the password; `-P` is its port.
fn command_flags(name: &str) -> &'static [(&'static str, Takes)] {
    match name {
        "sshpass" => &[("-p", Takes::Next)],
        "mysql" | "mysqldump" | "mysqladmin" | "mysqlimport" | "mysqlcheck" | "mysqlshow" | "mariadb"
        | "mariadb-dump" | "mariadb-admin" => &[("-p", Takes::Glued)],
        "7z" | "7za" | "7zr" => &[("-p", Takes::Glued)],
        "curl" => &[("-u", Takes::NextAfter(b':')), ("--user", Takes::NextAfter(b':')), ("-U", Takes::NextAfter(b':'))],
        "smbclient" => &[("-U", Takes::NextAfter(b'%')), ("--user", Takes::NextAfter(b'%'))],
        "redis-cli" => &[("-a", Takes::Next)],
        "ldapsearch" | "ldapmodify" | "ldapadd" | "ldapdelete" | "ldapwhoami" | "ldappasswd" => &[("-w", Takes::Next)],
        "sqlcmd" | "bcp" | "zip" | "ipmitool" | "mosquitto_pub" | "mosquitto_sub" => &[("-P", Takes::Next)],
        "ssh-keygen" => &[("-N", Takes::Next), ("-P", Takes::Next)],
        "mongo" | "mongosh" | "mongodump" | "mongorestore" | "mongoexport" | "mongoimport" | "twine" => {
            &[("-p", Takes::Next)]
        }
        _ => &[],
    }
}

/// Reads an argument list item by item: a flag with a secret name masks the
/// item after it, and a known command (any item naming it, by its path's
/// last part: `["docker", "exec", "db", "mysql", "-ppw"]`) makes its own
/// short flags secret, so `-p 8080` elsewhere stays readable.
#[derive(Debug, Default)]
pub struct ArgList {
    pending: Option<Takes>,
    flags: &'static [(&'static str, Takes)],
    /// The command seen last has a `login` subcommand whose `-p` is the
    /// password (`docker login -p`; `docker run -p` is a port).
    logs_in: bool,
    /// The command seen last is `kubectl` or `oc`: after `create secret`,
    /// every `--from-literal` value is a secret, whatever its name.
    kube: bool,
    /// A command whose secret only a word's place says, and how far it has read.
    pos: Positional,
}

/// The commands that take a secret as a positional word, and the words of
/// theirs read so far (flags not counted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Positional {
    #[default]
    None,
    /// `htpasswd -b[c] file user pw`, `htpasswd -nb user pw`: in batch mode
    /// its last word; `-C cost` and `-r rounds` take a value.
    Htpasswd { batch: bool, no_file: bool, words: u8, skip: bool },
    /// `net user NAME PW [/add]` (`*` prompts): `words` counts `user` too.
    Net { words: u8 },
    /// `vault login TOKEN`: its first word without `=` (`-method=userpass`
    /// takes `username=u password=pw`, which the text scan masks).
    VaultLogin { login: bool },
    /// `rabbitmqctl add_user USER PW` and `change_password USER PW`.
    Rabbit { words: u8 },
    /// `mc alias set NAME URL ACCESS SECRET`.
    McAlias { words: u8 },
    /// `rclone config create NAME TYPE key value ...` (`update NAME key
    /// value ...`): a value is secret when its key is. `skip` words precede
    /// the pairs; `secret`: the key before this word names a secret.
    Rclone { words: u8, skip: u8, key: bool, secret: bool },
}

/// A `login` subcommand's flags (see [`ArgList`]).
const LOGIN_FLAGS: &[(&str, Takes)] = &[("-p", Takes::Next)];
/// `kubectl create secret`'s literals.
const LITERAL_FLAGS: &[(&str, Takes)] =
    &[("--from-literal", Takes::NextAfter(b'=')), ("--from-literal=", Takes::GluedAfter(b'='))];

impl ArgList {
    /// Notes an item that is not text: no flag's value.
    pub fn other(&mut self) {
        self.pending = None;
    }

    /// Judges the next text item.
    pub fn item(&mut self, rules: &Rules, text: &str) -> ArgItem {
        if let Some(takes) = self.pending.take() {
            if flag_value_is_secret(text) {
                return match takes {
                    Takes::NextAfter(sep) => match text.bytes().position(|b| b == sep) {
                        Some(at) if at + 1 < text.len() => ArgItem::SecretFrom(at + 1),
                        _ => ArgItem::Plain,
                    },
                    _ => ArgItem::Secret,
                };
            }
        }
        let Some(&first) = text.as_bytes().first() else { return ArgItem::Plain };
        if self.pos != Positional::None {
            if let Some(out) = self.positional(rules, text, first) {
                return out;
            }
        }
        if first == b'-' {
            // The command's flags first: `-pSecret` is no `--secret`-like name.
            for &(flag, takes) in self.flags {
                if takes == Takes::Glued {
                    if let Some(rest) = text.strip_prefix(flag) {
                        if flag_value_is_secret(rest) {
                            return ArgItem::SecretFrom(flag.len());
                        }
                    }
                } else if let Takes::GluedAfter(sep) = takes {
                    if let Some(rest) = text.strip_prefix(flag) {
                        if let Some(at) = rest.bytes().position(|b| b == sep).filter(|&at| at + 1 < rest.len()) {
                            return ArgItem::SecretFrom(flag.len() + at + 1);
                        }
                    }
                } else if text == flag {
                    self.pending = Some(takes);
                    return ArgItem::Plain;
                }
            }
            if flag_is_secret(rules, text) {
                self.pending = Some(Takes::Next);
            }
            return ArgItem::Plain;
        }
        // Command names are short; a longer item costs one length check.
        if text.len() <= 64 {
            let name = text.rsplit(['/', '\\']).next().unwrap_or(text);
            let name = name.strip_suffix(".exe").unwrap_or(name);
            match name {
                "login" if self.logs_in => self.flags = LOGIN_FLAGS,
                "secret" if self.kube => self.flags = LITERAL_FLAGS,
                "docker" | "podman" | "nerdctl" | "buildah" | "skopeo" | "helm" | "az" | "oc" | "cf" => {
                    self.flags = &[];
                    self.logs_in = true;
                    self.kube = name == "oc";
                }
                "kubectl" => {
                    self.flags = &[];
                    self.logs_in = false;
                    self.kube = true;
                }
                "htpasswd" => self.pos = Positional::Htpasswd { batch: false, no_file: false, words: 0, skip: false },
                "net" => self.pos = Positional::Net { words: 0 },
                "vault" => self.pos = Positional::VaultLogin { login: false },
                "rabbitmqctl" => self.pos = Positional::Rabbit { words: 0 },
                "mc" | "mcli" => self.pos = Positional::McAlias { words: 0 },
                "rclone" => self.pos = Positional::Rclone { words: 0, skip: 0, key: false, secret: false },
                _ => {
                    let flags = command_flags(name);
                    if !flags.is_empty() {
                        self.flags = flags;
                        self.logs_in = false;
                        self.kube = false;
                    }
                }
            }
        }
        ArgItem::Plain
    }

    /// Reads `text`, a word after a command of [`Positional`]: `Some` once
    /// the word is judged (the command's subcommand, a flag, its secret),
    /// `None` to judge it as any item (the command is not one with such a
    /// secret after all).
    fn positional(&mut self, rules: &Rules, text: &str, first: u8) -> Option<ArgItem> {
        use Positional as P;
        let flag = first == b'-';
        let secret = |t: &str| if flag_value_is_secret(t) { ArgItem::Secret } else { ArgItem::Plain };
        // Words before the subcommand (a global flag's value) are judged as any item.
        let (next, out) = match self.pos {
            P::None => return None,
            P::Htpasswd { batch, no_file, words, skip } => {
                if skip {
                    (P::Htpasswd { batch, no_file, words, skip: false }, Some(ArgItem::Plain))
                } else if let Some(letters) = text.strip_prefix('-') {
                    let (batch, no_file) = (batch || letters.contains('b'), no_file || letters.contains('n'));
                    let skip = letters.ends_with(['C', 'r']);
                    (P::Htpasswd { batch, no_file, words, skip }, Some(ArgItem::Plain))
                } else if batch && words + 1 == if no_file { 2 } else { 3 } {
                    (P::None, Some(secret(text)))
                } else {
                    (P::Htpasswd { batch, no_file, words: words + 1, skip }, Some(ArgItem::Plain))
                }
            }
            P::Net { words } => match words {
                // The word right after `net`: a list of words holding `net` is no command.
                0 if text.eq_ignore_ascii_case("user") => (P::Net { words: 1 }, Some(ArgItem::Plain)),
                // Switches (`/add`, `/domain`) stand anywhere.
                1.. if first == b'/' => (P::Net { words }, Some(ArgItem::Plain)),
                1 => (P::Net { words: 2 }, Some(ArgItem::Plain)),
                2.. if text != "*" => (P::None, Some(secret(text))),
                _ => (P::None, None),
            },
            P::VaultLogin { login } => match (flag, login) {
                (true, _) => (self.pos, None),
                (false, false) if text == "login" => (P::VaultLogin { login: true }, Some(ArgItem::Plain)),
                (false, true) if !text.contains('=') => (P::None, Some(secret(text))),
                (false, _) => (P::None, None),
            },
            P::Rabbit { words } => match (flag, words) {
                (true, _) => (self.pos, None),
                (false, 0) if matches!(text, "add_user" | "change_password") => {
                    (P::Rabbit { words: 1 }, Some(ArgItem::Plain))
                }
                (false, 0) => (self.pos, None),
                (false, 1) => (P::Rabbit { words: 2 }, Some(ArgItem::Plain)),
                (false, _) => (P::None, Some(secret(text))),
            },
            P::McAlias { words } => match (flag, words) {
                (true, _) => (self.pos, None),
                (false, 0) if text == "alias" => (P::McAlias { words: 1 }, Some(ArgItem::Plain)),
                (false, 0) => (self.pos, None),
                (false, 1) if text == "set" => (P::McAlias { words: 2 }, Some(ArgItem::Plain)),
                (false, 1) => (P::None, None),
                (false, 2..=4) => (P::McAlias { words: words + 1 }, Some(ArgItem::Plain)),
                (false, _) => (P::None, Some(secret(text))),
            },
            P::Rclone { words, skip, key, secret: named } => match (flag, words) {
                (true, _) => (self.pos, None),
                (false, 0) if text == "config" => {
                    (P::Rclone { words: 1, skip, key, secret: named }, Some(ArgItem::Plain))
                }
                (false, 0) => (self.pos, None),
                (false, 1) if matches!(text, "create" | "update") => {
                    let skip = if text == "create" { 4 } else { 3 };
                    (P::Rclone { words: 2, skip, key: true, secret: false }, Some(ArgItem::Plain))
                }
                (false, 1) => (P::None, None),
                (false, _) if words < skip => {
                    (P::Rclone { words: words + 1, skip, key, secret: named }, Some(ArgItem::Plain))
                }
                // A `key=value` word is a pair of its own, which the text scan reads.
                (false, _) if key && text.contains('=') => (self.pos, None),
                (false, _) if key => {
                    (P::Rclone { words, skip, key: false, secret: rules.key_is_secret(text) }, Some(ArgItem::Plain))
                }
                (false, _) => {
                    let out = Some(if named { secret(text) } else { ArgItem::Plain });
                    (P::Rclone { words, skip, key: true, secret: false }, out)
                }
            },
        };
        self.pos = next;
        out
    }
}

/// Whether an argument list's first item names a command whose secrets
/// only the text shapes know (`aws configure set`, `echo pw | docker login
/// --password-stdin`, `openssl enc -k`, `gh secret set N --body`): such a
/// list is also read as its command line (see [`command_line_spans`]).
pub fn names_text_command(first: &str) -> bool {
    if first.len() > 64 {
        return false;
    }
    matches!(
        command_name(first),
        "aws"
            | "npm"
            | "yarn"
            | "pnpm"
            | "gh"
            | "az"
            | "gcloud"
            | "dotnet"
            | "openssl"
            | "redis-cli"
            | "net"
            | "NET"
            | "sqlplus"
            | "snmpwalk"
            | "snmpget"
            | "snmpset"
            | "snmpbulkwalk"
            | "snmptrap"
            | "echo"
            | "chpasswd"
            | "fly"
            | "flyctl"
            | "doppler"
            | "infisical"
            | "wrangler"
    )
}

/// A command's name from the path an argument list's first item may give
/// (`/usr/local/bin/aws`, `C:\Tools\az.exe`).
fn command_name(first: &str) -> &str {
    // Byte by byte: both separators are ASCII, and most first items are short words without either.
    let name = first.as_bytes().iter().rposition(|&b| b == b'/' || b == b'\\').map_or(first, |at| &first[at + 1..]);
    name.strip_suffix(".exe").unwrap_or(name)
}

/// The secrets the text shapes find in an argument list read as its
/// command line (its items joined by blanks; an item holding a blank or a
/// quote quoted; the command by its name, not its path), as byte ranges of
/// each item; `None` when none is found. Items that are not text stand as
/// empty words.
pub fn command_line_spans(rules: &Rules, items: &[&str]) -> Option<Vec<Vec<(usize, usize)>>> {
    if !rules.patterns() || items.len() < 2 {
        return None;
    }
    let mut line = String::new();
    let mut starts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if i == 0 {
            // The command's text shapes need its name at a word's start; the
            // name is no secret, so its item's span is never wanted.
            starts.push(0);
            line.push_str(command_name(item));
            continue;
        }
        line.push(' ');
        let quote = if item.contains('\'') { '"' } else { '\'' };
        let quoted = item.is_empty() || item.contains([' ', '\t', '\n', '\r', '"', '\'']);
        if quoted {
            line.push(quote);
        }
        starts.push(line.len());
        line.push_str(item);
        if quoted {
            line.push(quote);
        }
    }
    let mut spans = Vec::new();
    let mut key_info = |k: &str| rules.pair_info(k, false);
    super::patterns::find_spans(&line, &mut key_info, &mut spans);
    if spans.is_empty() {
        return None;
    }
    let mut out = vec![Vec::new(); items.len()];
    for (a, z) in spans {
        // The first item ending after the span's start, then each one it reaches.
        let mut i = starts.partition_point(|&start| start <= a).saturating_sub(1).max(1);
        while i < items.len() && starts[i] < z {
            let (start, end) = (starts[i], starts[i] + items[i].len());
            if a < end && z > start {
                out[i].push((a.max(start) - start, z.min(end) - start));
            }
            i += 1;
        }
    }
    Some(out)
}

/// Whether the item after a secret flag is its value: not another flag,
/// and not a placeholder or a null word (see the text shape's values).
pub fn flag_value_is_secret(value: &str) -> bool {
    !value.starts_with('-') && !super::patterns::keep_value(value) && !super::patterns::shell_operator(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::keys::Normalized;

    fn record(entries: &[(&str, &str)]) -> Vec<String> {
        let rules = Rules::default();
        let mut n = Normalized::default();
        let mut rec = Record::default();
        for (k, v) in entries {
            let info = rules.classify(k, &mut n);
            rec.note(&rules, info, || (*k).to_owned(), Some(v));
        }
        rec.finish()
    }

    #[test]
    fn a_secret_name_masks_every_value_field() {
        assert_eq!(
            record(&[("key", "llm.api_key"), ("old_value", "a"), ("new_value", "b")]),
            ["old_value", "new_value"]
        );
        assert_eq!(record(&[("old", "a"), ("field", "smtp_password"), ("new", "b")]), ["old", "new"]);
        assert_eq!(record(&[("name", "Authorization"), ("value", "Bearer x")]), ["value"]);
        assert_eq!(record(&[("name", "DB_PASSWORD"), ("value", "x")]), ["value"]);
        assert_eq!(record(&[("ParameterKey", "DBPassword"), ("ParameterValue", "x")]), ["ParameterValue"]);
        assert_eq!(record(&[("ParameterName", "master_password"), ("ParameterValue", "x")]), ["ParameterValue"]);
        assert_eq!(
            record(&[
                ("Namespace", "aws:elasticbeanstalk:application:environment"),
                ("OptionName", "API_TOKEN"),
                ("Value", "x")
            ]),
            ["Value"]
        );
    }

    #[test]
    fn a_plain_name_masks_nothing() {
        assert!(record(&[("key", "llm.max_tokens"), ("old_value", "1"), ("new_value", "2")]).is_empty());
        assert!(record(&[("field", "retries"), ("old", "1"), ("new", "2")]).is_empty());
        assert!(record(&[("value", "x")]).is_empty());
        assert!(record(&[("ParameterKey", "Region"), ("ParameterValue", "eu-west-1")]).is_empty());
    }

    #[test]
    fn argument_flags_are_judged_by_their_name() {
        let rules = Rules::default();
        for flag in ["--password", "-password", "--db-password", "--api-key", "--client_secret", "-storepass"] {
            assert!(flag_is_secret(&rules, flag), "{flag}");
        }
        for item in [
            "password",
            "--password-file",
            "--password-stdin",
            "--max-tokens",
            "--verbose",
            "--",
            "-",
            "--password=x",
            "---password",
        ] {
            assert!(!flag_is_secret(&rules, item), "{item}");
        }
        assert!(flag_value_is_secret("hunter2"));
        for value in ["--verbose", "", "$DB_PASSWORD", "${DB_PASSWORD}", "env:DB_PASSWORD"] {
            assert!(!flag_value_is_secret(value), "{value}");
        }
    }

    #[test]
    fn pairs_are_judged_by_their_name() {
        let rules = Rules::default();
        assert!(pair_is_secret(&rules, "Authorization"));
        assert!(pair_is_secret(&rules, "X-Api-Key"));
        assert!(!pair_is_secret(&rules, "Content-Type"));
    }
}
