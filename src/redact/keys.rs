//! Key names: normalisation and classification.
//!
//! Every anchor studied matches raw key text, so a soft hyphen, a fullwidth
//! letter or `xApiKey` against `x_api_key` defeats them. Here a key is first
//! reduced to a *compact* form (case folded, separators and invisible
//! characters removed) plus the offsets where its *tokens* start (split on
//! separators and camelCase), and the rules run on that:
//! substring terms anywhere, short terms only as whole tokens, exact
//! framework names on the whole compact form, and a safe list that keeps
//! counters and look-alikes (`max_tokens`, `public_key`) readable.
//!
//! ASCII keys (nearly all of them) take a byte loop with no Unicode tables;
//! only non-ASCII keys pay for NFKD.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Secret words that may appear anywhere in the compact key.
pub const SUBSTRING_TERMS: &[&str] = &[
    "password",
    "passwd",
    "passwort",
    "passphrase",
    "contrasena",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "secretkey",
    "accesskey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "clientkey",
    "authkey",
    "credential",
    "authorization",
    "authentication",
    "cookie",
    "sessionid",
    "sessid",
    "csrf",
    "xsrf",
    "jwt",
    "bearer",
    "mysqlpwd",
    "connectionstring",
    "connstr",
    "webhookurl",
    "saslpassword",
    "pgpass",
    // Java keytool's `-storepass`, `-keypass`, `-srcstorepass`, ...
    "storepass",
    "keypass",
    // Redis's `requirepass` and `masterauth` settings.
    "requirepass",
    "masterauth",
    // "Password" in other languages, written with or without their marks
    // (the automaton holds each term's normalised form).
    "kennwort",
    "motdepasse",
    "senha",
    "wachtwoord",
    "lösenord",
    "passord",
    "salasana",
    "adgangskode",
    "hasło",
    "haslo",
    "heslo",
    "jelszó",
    "şifre",
    "lozinka",
    "geslo",
    "parool",
    "пароль",
    "密码",
    "密碼",
    "パスワード",
    "비밀번호",
    "סיסמה",
    "סיסמא",
    "كلمة_المرور",
    "كلمة_السر",
    "รหัสผ่าน",
    "पासवर्ड",
    "mật_khẩu",
    "kata_sandi",
    "passwrd",
    // Credentials with no secret word in their names: a wallet's seed
    // phrase, 2FA recovery codes, one-time codes sent to a user, a security
    // question's answer, OAuth/PKCE verifiers, a SAML login response.
    "seedphrase",
    "recoveryphrase",
    "mnemonic",
    "recoverycode",
    "backupcode",
    "verificationcode",
    "onetimecode",
    "securityanswer",
    "codeverifier",
    "oauthverifier",
    "samlresponse",
    // WordPress's login cookies, `wordpress_logged_in_<hash>`, `wordpress_sec_<hash>`.
    "wordpressloggedin",
    "wordpresssec",
];

/// Short words that are secret only as a whole token: as substrings they
/// would hit `author`, `compass`, `spin`, `footprint`, `classname`.
pub const TOKEN_TERMS: &[&str] = &[
    "pwd",
    "pass",
    "pw",
    "auth",
    "otp",
    "totp",
    "hotp",
    "mfa",
    "pin",
    "cvv",
    "cvc",
    "cvv2",
    "ssn",
    "sid",
    "salt",
    "sig",
    "signature",
    "hmac",
    "session",
    // Short for session in cookie names (GitHub's `_gh_sess`, `rack.sess`).
    "sess",
    "private",
    "priv",
    "cert",
    "certificate",
    "passcode",
    "creds",
    "dsn",
    "pswd",
    "psw",
    "passw",
    "pword",
    // A pre-shared key (`wpa_psk`, IPsec).
    "psk",
    // Codes a user is sent or shown to prove who they are, as whole
    // words (not `preset_code`): a card's security code (its CVV, which
    // PCI DSS forbids storing), a two-factor code, a password reset code.
    "securitycode",
    "twofactorcode",
    "2facode",
    "resetcode",
];

/// `key`/`keys` are secret only as the last of at least two tokens
/// (`api_key`, `x-api-key`, `ssh_keys`), never `key_id` or a bare `key`,
/// which is the name field of a `config_changed` record. So is `pat`, a
/// personal access token (`AZURE_DEVOPS_EXT_PAT`, `GITHUB_PAT`), never
/// `pat_id` or a bare `pat` (a person's name).
pub const LAST_TOKEN_TERMS: &[&str] = &["key", "keys", "pat"];

/// Framework, header and cookie names (compact form) that the rules above miss.
pub const EXACT_NAMES: &[&str] = &[
    "symfony",
    "sentrysid",
    "sudo",
    "idrsa",
    "iddsa",
    "ided25519",
    "twofactor",
    "cardnumber",
    "iban",
    "mysession",
    "phpsessid",
    "jsessionid",
    "aspnetsessionid",
    "connectsid",
    "laravelsession",
    "usersession",
    "aiohttpsession",
    "sessionkey",
    "xapikey",
    "xauthtoken",
    "xamzsecuritytoken",
    "xgoogapikey",
    "secwebsocketkey",
    "setcookie",
    "proxyauthorization",
    "authenticitytoken",
    "clientkeydata",
    // OpenSSL's and Let's Encrypt's name for a private key.
    "privkey",
    // ASP.NET's forms-authentication and Identity cookies.
    "aspxauth",
    "aspnetcoreidentityapplication",
    // SiteMinder's single sign-on session cookie.
    "smsession",
];

/// Keys that look secret but carry counters, metadata or public values
/// (compact form). A key is safe when its compact form, or the compact form
/// of its last tokens (`llm.max_tokens` -> `maxtokens`), is listed.
pub const SAFE_NAMES: &[&str] = &[
    // The few leading characters an auth_success row records to tell tokens
    // apart (seed 001); a whole token under this name is still caught by shape.
    "tokenprefix",
    // Token counters and settings.
    "tokencount",
    "tokenscount",
    "maxtokens",
    "mintokens",
    "maxnewtokens",
    "maxcompletiontokens",
    "maxoutputtokens",
    "maxinputtokens",
    "inputtokens",
    "outputtokens",
    "prompttokens",
    "completiontokens",
    "totaltokens",
    "cachedtokens",
    "reasoningtokens",
    "numtokens",
    "ntokens",
    "tokensused",
    "tokenusage",
    "tokenlimit",
    "tokenbudget",
    "tokenizer",
    "tokenizername",
    "tokentype",
    "tokenexpiresat",
    "tokenexpiresin",
    "tokenexpiry",
    "tokenttl",
    // `pat` for "pattern", not a personal access token.
    "globpat",
    "regexpat",
    "searchpat",
    "matchpat",
    "filepat",
    "namepat",
    "includepat",
    "excludepat",
    // Key metadata and public keys.
    "keyid",
    "keyname",
    "keytype",
    "keyalgorithm",
    "keyversion",
    "keyfingerprint",
    "publickey",
    "publickeys",
    "primarykey",
    "foreignkey",
    "keyboard",
    "keystroke",
    "sortkey",
    "partitionkey",
    "cachekey",
    "idempotencykey",
    "objectkey",
    "routingkey",
    "hashkey",
    "rangekey",
    "rowkey",
    "lookupkey",
    "dedupkey",
    "deduplicationkey",
    "uniquekey",
    "naturalkey",
    "compositekey",
    "issuekey",
    "translationkey",
    "messagekey",
    "eventkey",
    "configkey",
    "settingkey",
    // CloudFormation's parameter name field (`{"ParameterKey": "DbPassword", "ParameterValue": ...}`).
    "parameterkey",
    // Authorship.
    "author",
    "authors",
    "authority",
    "authoredby",
    "authorname",
    "authorid",
    "authmethod",
    "authtype",
    "authprovider",
    "authmode",
    "authscheme",
    "authenticationmethod",
    "authenticationtype",
    // Counts of authentication outcomes: an auditor reads them (failed
    // logins per account); the credential itself is never a count.
    "authfailures",
    "authfailurecount",
    "authattempts",
    "authsuccesses",
    "authcount",
    "failedauthcount",
    "failedauthattempts",
    "authenticationfailures",
    "authenticationattempts",
    "passwordattempts",
    "passwordfailures",
    "failedpasswordattempts",
    "passwordresetcount",
    // Session settings.
    "sessiontimeout",
    "sessioncount",
    "sessionduration",
    "sessionttl",
    // Password metadata (a *hint* stays masked: it can disclose the password).
    "passwordpolicy",
    "passwordminlength",
    "passwordmaxlength",
    "passwordupdatedat",
    "passwordchangedat",
    "passwordexpiresat",
    // The same with Unix's spelling (`passwd_changed_at`, a CSV column).
    "passwdupdatedat",
    "passwdchangedat",
    "passwdexpiresat",
    "pwdupdatedat",
    "pwdchangedat",
    "pwdexpiresat",
    // Active Directory's timestamp of the last password change.
    "pwdlastset",
    "passwordless",
    // Where a secret is kept, or how it is passed, not the secret: file and
    // socket paths, endpoints, reference names and CLI switches
    // (`--password-stdin`, `--vault-password-file`, `PGPASSFILE`,
    // `SSH_AUTH_SOCK`, a Kubernetes `secretName`). A secret written into
    // such a value is still caught by its shape.
    "passwordstdin",
    "passwordfile",
    "passwordpath",
    "passphrasefile",
    "passphrasefd",
    "tokenfile",
    "tokenpath",
    "secretfile",
    "secretpath",
    "secretname",
    "secretref",
    "secretkeyref",
    "googleapplicationcredentials",
    "credentialsfile",
    "credentialfile",
    "privatekeyfile",
    "privatekeypath",
    "certfile",
    "certpath",
    "pgpassfile",
    "authsock",
    "tokenurl",
    "tokenuri",
    "tokenendpoint",
    "apikeyheader",
    "authenticationdatabase",
    "passwordhashalgorithm",
    "passwordencryption",
    "passwordreseturl",
    "resetpasswordurl",
    "passwordminlen",
    "passwordmin",
    "passwordagedays",
    "secretcount",
    // Word collisions.
    "bypass",
    "compass",
    "passenger",
    "passengers",
    "passage",
];

/// The entries of a record that name its subject (`{"key": "llm.api_key", ...}`).
pub const NAME_FIELDS: &[&str] = &[
    "key",
    "name",
    "field",
    "setting",
    "param",
    "parameter",
    "option",
    "path",
    "attribute",
    "attr",
    "header",
    "env",
    "variable",
    "var",
    "property",
    "configkey",
    "settingkey",
    "settingname",
    "fieldname",
    "keyname",
    // AWS APIs' parameter and option lists: CloudFormation's `ParameterKey`,
    // RDS's `ParameterName`, Elastic Beanstalk's `OptionName`.
    "parameterkey",
    "parametername",
    "optionname",
];

/// The entries of such a record that carry the subject's value.
pub const VALUE_FIELDS: &[&str] = &[
    "value",
    "val",
    "old",
    "new",
    "oldvalue",
    "newvalue",
    "from",
    "to",
    "before",
    "after",
    "previous",
    "previousvalue",
    "current",
    "currentvalue",
    "default",
    "defaultvalue",
    "parametervalue",
];

/// What a key is, for the walkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyInfo {
    /// Its value is a secret.
    pub secret: bool,
    /// It names the subject of its record (see [`NAME_FIELDS`]).
    pub name_field: bool,
    /// It carries the subject's value (see [`VALUE_FIELDS`]).
    pub value_field: bool,
    /// It is exactly a JSON Web Key's private member (see [`JWK_PRIVATE`]):
    /// secret when its object has a `kty` member.
    pub jwk_private: bool,
    /// It is exactly `kty`: its object is a JSON Web Key.
    pub jwk_type: bool,
    /// It is exactly `kind`: its object is a Kubernetes Secret when it says `Secret`.
    pub manifest_kind: bool,
    /// It is exactly `data` or `stringData`: a Kubernetes Secret's values,
    /// secret when its object's `kind` is `Secret`.
    pub manifest_data: bool,
}

/// A JSON Web Key's private members (RFC 7518 section 6: RSA's `d`, `p`,
/// `q`, `dp`, `dq`, `qi`, `oth`; EC and OKP's `d`; a symmetric key's `k`).
/// One-letter names are no secret anywhere else, so they are masked only
/// in an object that has a `kty` member; member names are case-sensitive.
pub const JWK_PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The roles an exact key text has in a JSON Web Key: (private member, `kty`).
pub fn jwk_roles(key: &str) -> (bool, bool) {
    if key.len() > 3 {
        return (false, false);
    }
    (JWK_PRIVATE.contains(&key), key == "kty")
}

/// The roles an exact key text has in a Kubernetes manifest: (`data` or
/// `stringData`, `kind`). A Secret's values are only base64 (`data`) or
/// plain text (`stringData`) under names of any kind (`tls.key`, `url`).
pub fn manifest_roles(key: &str) -> (bool, bool) {
    (matches!(key, "data" | "stringData"), key == "kind")
}

/// Whether a `kind` member's text says its manifest is a Kubernetes Secret.
pub fn secret_kind(kind: &str) -> bool {
    kind == "Secret"
}

/// A key reduced for matching: case folded, separators and invisible
/// characters removed; `starts` holds the byte offset of each token.
#[derive(Debug, Default)]
pub struct Normalized {
    pub compact: String,
    pub starts: Vec<usize>,
}

impl Normalized {
    /// Whether `[start, end)` of `compact` is exactly one or more whole tokens.
    fn aligned(&self, start: usize, end: usize) -> bool {
        self.starts.contains(&start) && (end == self.compact.len() || self.starts.contains(&end))
    }

    /// Whether `[start, end)` is the last token, in a key of two tokens or more.
    fn last_of_several(&self, start: usize, end: usize) -> bool {
        end == self.compact.len() && self.starts.len() >= 2 && self.starts.last() == Some(&start)
    }

    /// The compact forms of the key's trailing tokens, longest first, up to
    /// `max_len` bytes (bounded so that a 1 MB key stays linear).
    fn suffixes(&self, max_len: usize) -> impl Iterator<Item = &str> {
        let len = self.compact.len();
        self.starts.iter().filter(move |&&s| len - s <= max_len).map(move |&s| &self.compact[s..])
    }
}

/// Reduces `key` into `out` (buffers reused across keys).
pub fn normalize(key: &str, out: &mut Normalized) {
    out.compact.clear();
    out.starts.clear();
    if key.is_ascii() {
        let bytes = key.as_bytes();
        tokenize(bytes.iter().map(|&b| b as char), out);
    } else {
        tokenize(key.nfkd().filter(|&c| !is_combining_mark(c) && !is_invisible(c)).map(skeleton), out);
    }
}

/// Splits on non-alphanumerics and camelCase, folding case; shared by the
/// ASCII and Unicode paths so that both give the same tokens.
fn tokenize(chars: impl Iterator<Item = char>, out: &mut Normalized) {
    let mut chars = chars.peekable();
    // Class of the previous character: 0 separator/start, 1 lower, 2 upper, 3 digit.
    let mut prev = 0u8;
    while let Some(c) = chars.next() {
        if !c.is_alphanumeric() {
            prev = 0;
            continue;
        }
        let class = if c.is_uppercase() {
            2
        } else if c.is_numeric() {
            3
        } else {
            1
        };
        let next_lower = chars.peek().is_some_and(|n| n.is_lowercase());
        let boundary = prev == 0 || (class == 2 && (prev == 1 || prev == 3 || (prev == 2 && next_lower)));
        if boundary {
            out.starts.push(out.compact.len());
        }
        fold_into(c, &mut out.compact);
        prev = class;
    }
}

/// Case folding for matching: lowercase plus the full folds that
/// `to_lowercase` lacks (`ß` -> `ss`, dotless `ı` -> `i`).
fn fold_into(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    match c {
        'ß' | 'ẞ' => out.push_str("ss"),
        'ı' => out.push('i'),
        'ς' => out.push('σ'),
        _ => out.extend(c.to_lowercase().filter(|&l| !is_combining_mark(l))),
    }
}

/// Default-ignorable and format characters: they render as nothing, so a
/// key that contains them must match as if they were absent.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Cyrillic and Greek letters drawn like Latin ones (a small UTS #39
/// confusables skeleton), so `pаssword` with a Cyrillic `а` still matches.
fn skeleton(c: char) -> char {
    match c {
        'а' | 'α' => 'a',
        'А' | 'Α' => 'A',
        'в' => 'b',
        'В' | 'Β' => 'B',
        'с' | 'ϲ' => 'c',
        'С' | 'Ϲ' => 'C',
        'ԁ' => 'd',
        'е' | 'ё' => 'e',
        'Е' | 'Ё' | 'Ε' => 'E',
        'һ' => 'h',
        'Н' | 'Η' => 'H',
        'і' | 'ι' => 'i',
        'І' | 'Ι' => 'I',
        'ј' => 'j',
        'Ј' => 'J',
        'к' | 'κ' => 'k',
        'К' | 'Κ' => 'K',
        'М' | 'Μ' => 'M',
        'Ν' => 'N',
        'о' | 'ο' => 'o',
        'О' | 'Ο' => 'O',
        'р' | 'ρ' => 'p',
        'Р' | 'Ρ' => 'P',
        'ѕ' => 's',
        'Ѕ' => 'S',
        'Т' | 'Τ' => 'T',
        'υ' => 'u',
        'ν' => 'v',
        'ԝ' => 'w',
        'х' | 'χ' => 'x',
        'Х' | 'Χ' => 'X',
        'у' => 'y',
        'У' | 'Υ' => 'Y',
        'Ζ' => 'Z',
        _ => c,
    }
}

/// How a default term must sit in the key to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Substring,
    Token,
    LastToken,
    Exact,
}

/// One automaton over every default term: a key costs one pass over its
/// compact form whatever the number of terms.
struct Matcher {
    ac: AhoCorasick,
    kinds: Vec<Kind>,
}

static DEFAULT: LazyLock<Option<Matcher>> = LazyLock::new(|| {
    let mut terms = Vec::new();
    let mut kinds = Vec::new();
    for (list, kind) in [
        (SUBSTRING_TERMS, Kind::Substring),
        (TOKEN_TERMS, Kind::Token),
        (LAST_TOKEN_TERMS, Kind::LastToken),
        (EXACT_NAMES, Kind::Exact),
    ] {
        for term in list {
            // Keys are matched in their normalised form, so terms are too
            // (`lösenord` as `losenord`, `пароль` with its Latin look-alikes).
            terms.push(compact_term(term).unwrap_or_else(|| (*term).to_owned()));
            kinds.push(kind);
        }
    }
    let ac = AhoCorasickBuilder::new()
        .kind(Some(AhoCorasickKind::DFA))
        .match_kind(MatchKind::Standard)
        .build(&terms)
        .ok()?;
    Some(Matcher { ac, kinds })
});

/// Longest entry of [`SAFE_NAMES`]: suffixes longer than this cannot match.
static SAFE_MAX: LazyLock<usize> = LazyLock::new(|| SAFE_NAMES.iter().map(|s| s.len()).max().unwrap_or(0));

/// Whether the default rules call the normalised key a secret (safe list not applied).
pub fn default_secret(n: &Normalized) -> bool {
    let Some(m) = DEFAULT.as_ref() else {
        // The automaton is built from constants; should it ever fail, fall
        // back to the slow path rather than let secrets through.
        return SUBSTRING_TERMS.iter().any(|t| n.compact.contains(t));
    };
    m.ac.find_overlapping_iter(n.compact.as_str()).any(|hit| {
        let (s, e) = (hit.start(), hit.end());
        match m.kinds[hit.pattern().as_usize()] {
            Kind::Substring => true,
            Kind::Token => n.aligned(s, e),
            Kind::LastToken => n.last_of_several(s, e),
            Kind::Exact => s == 0 && e == n.compact.len(),
        }
    }) || drupal_session(&n.compact)
}

/// Bundler's credentials for a gem server, `BUNDLE_<HOST>` with the
/// host's dots written `__` (`BUNDLE_GEMS__CONTRIBSYS__COM=user:password`);
/// not its settings for a gem's build, a mirror or a local checkout
/// (`BUNDLE_BUILD__NOKOGIRI`), nor one-word settings (`BUNDLE_PATH`).
pub fn bundler_credentials(key: &str) -> bool {
    let Some(host) = key.get(..7).filter(|p| p.eq_ignore_ascii_case("bundle_")).map(|_| &key[7..]) else {
        return false;
    };
    let setting = ["build__", "mirror__", "local__"]
        .iter()
        .any(|p| host.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)));
    !setting
        && host.split("__").count() >= 2
        && host
            .split("__")
            .all(|part| !part.is_empty() && part.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'))
}

/// Drupal's session cookie: `SESS` (`SSESS` over HTTPS) and a hash of the
/// site's name, a name no word list can hold.
fn drupal_session(compact: &str) -> bool {
    compact
        .strip_prefix("ssess")
        .or_else(|| compact.strip_prefix("sess"))
        .is_some_and(|hash| hash.len() >= 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether the default safe list keeps the normalised key readable. A
/// routing key is AMQP's address, but one named for PagerDuty
/// (`PAGERDUTY_ROUTING_KEY`, `pd_routing_key`) is its Events API's
/// integration key, which opens incidents.
pub fn default_safe(n: &Normalized) -> bool {
    n.suffixes(*SAFE_MAX).any(|s| SAFE_NAMES.contains(&s)) && !pagerduty_routing_key(n)
}

fn pagerduty_routing_key(n: &Normalized) -> bool {
    let c = n.compact.as_str();
    c.ends_with("routingkey") && (c.starts_with("pagerduty") || (c.starts_with("pd") && n.aligned(0, 2)))
}

/// Whether `set` (compact forms, as built by [`compact_term`]) holds the key or its trailing tokens.
pub fn in_set(n: &Normalized, set: &[String], max_len: usize) -> bool {
    !set.is_empty() && n.suffixes(max_len).any(|s| set.iter().any(|t| t == s))
}

/// The roles a key can have in a name/value record.
pub fn roles(n: &Normalized) -> (bool, bool) {
    let c = n.compact.as_str();
    // The longest name in either list (`parametervalue`).
    if c.len() > 14 {
        return (false, false);
    }
    (NAME_FIELDS.contains(&c), VALUE_FIELDS.contains(&c))
}

/// The compact form of a user-supplied key name, or `None` when nothing is left.
pub fn compact_term(term: &str) -> Option<String> {
    let mut n = Normalized::default();
    normalize(term, &mut n);
    (!n.compact.is_empty()).then_some(n.compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(key: &str) -> Normalized {
        let mut n = Normalized::default();
        normalize(key, &mut n);
        n
    }

    fn secret(key: &str) -> bool {
        let n = norm(key);
        default_secret(&n) && !default_safe(&n)
    }

    fn tokens(key: &str) -> Vec<String> {
        let n = norm(key);
        let mut out = Vec::new();
        for (i, &s) in n.starts.iter().enumerate() {
            let e = n.starts.get(i + 1).copied().unwrap_or(n.compact.len());
            out.push(n.compact[s..e].to_owned());
        }
        out
    }

    #[test]
    fn separators_and_camel_case_fold_to_one_compact_form() {
        for key in ["x-api-key", "x_api_key", "X-Api-Key", "x.api.key", "x api key", "xApiKey", " x-api-key\t"] {
            assert_eq!(norm(key).compact, "xapikey", "{key}");
            assert_eq!(tokens(key), ["x", "api", "key"], "{key}");
        }
        assert_eq!(tokens("APIKey"), ["api", "key"]);
        assert_eq!(norm("XAPIKey").compact, "xapikey");
        assert_eq!(tokens("oauth2Token"), ["oauth2", "token"]);
        assert_eq!(tokens("user[password]"), ["user", "password"]);
    }

    #[test]
    fn unicode_tricks_normalise_away() {
        for key in [
            "pass\u{00AD}word",
            "pass\u{200B}word",
            "\u{FEFF}password\u{2060}",
            "pass\u{202E}word",
            "ｐａｓｓｗｏｒｄ",
            "p\u{0430}ssword",
            "PASSWORD",
            "pa\u{0301}ssword",
            "pass\u{FFFD}word",
        ] {
            assert_eq!(norm(key).compact, "password", "{key:?}");
            assert!(secret(key), "{key:?}");
        }
        assert_eq!(norm("paßwort").compact, "passwort");
        assert!(secret("paßwort"));
        assert_eq!(norm("İD").compact, "id");
    }

    #[test]
    fn substring_terms_match_anywhere() {
        for key in [
            "password",
            "db_password",
            "client_secret",
            "access_token",
            "refreshToken",
            "HTTP_AUTHORIZATION",
            "set-cookie",
            "sentry_dsn",
            "passphrase",
            "aws_secret_access_key",
            "password_hint",
            "user[password]",
            "db.password",
        ] {
            assert!(secret(key), "{key}");
        }
    }

    #[test]
    fn short_terms_match_only_as_whole_tokens() {
        for key in [
            "pwd",
            "DB_PWD",
            "pin",
            "PASS_WORD",
            "pass word",
            "auth",
            "x-auth",
            "otp",
            "ssn",
            "sid",
            "session",
            "cvv2",
            "salt",
            "sig",
            "security_code",
            "card_security_code",
            "twoFactorCode",
            "2fa_code",
            "reset_code",
        ] {
            assert!(secret(key), "{key}");
        }
        for key in [
            "author",
            "authority",
            "spin",
            "pinned",
            "footprint",
            "classname",
            "bypass",
            "compass",
            "salty",
            "signal",
            "design",
            "monkey",
            "keyboard",
            "sessions_total",
            "passenger",
            "preset_code",
        ] {
            assert!(!secret(key), "{key}");
        }
    }

    #[test]
    fn key_is_secret_only_as_last_of_several_tokens() {
        for key in ["api_key", "db_key", "x-api-key", "sshKey", "AccountKey", "ssh_keys", "SharedAccessKey"] {
            assert!(secret(key), "{key}");
        }
        for key in [
            "key",
            "key_id",
            "key_name",
            "keyboard",
            "primary_key",
            "public_key",
            "foreign_key",
            "sort_key",
            "monkey",
            "ParameterKey",
        ] {
            assert!(!secret(key), "{key}");
        }
    }

    #[test]
    fn exact_names_match_the_whole_key() {
        for key in ["sudo", "symfony", "PHPSESSID", "sentrysid", "id_rsa", "two_factor", "card[number]", "iban"] {
            assert!(secret(key), "{key}");
        }
        assert!(!secret("pseudo"));
        assert!(!secret("sudoers_path"));
    }

    #[test]
    fn safe_list_keeps_counters_and_lookalikes() {
        for key in [
            "max_tokens",
            "prompt_tokens",
            "llm.max_tokens",
            "gen_ai.usage.input_tokens",
            "token_count",
            "tokenizer",
            "token_type",
            "public_key",
            "key_id",
            "author",
            "session_timeout",
            "password_policy",
            "passwordless",
            "api_key_id",
            "auth_failures",
            "failedAuthAttempts",
            "password_attempts",
            "login.auth_attempts",
            "password-stdin",
            "vault-password-file",
            "passphrase-fd",
            "PGPASSFILE",
            "SSH_AUTH_SOCK",
            "secretName",
            "token_endpoint",
            "private_key_path",
            "PASSWORD_MIN",
        ] {
            assert!(!secret(key), "{key}");
        }
        for key in [
            "access_tokens",
            "refresh_token",
            "password_hint",
            "tokens",
            "auth",
            "auth_failure_token",
            // Vault AppRole's `secret_id` is a credential, unlike AWS's `--secret-id`.
            "secret_id",
            "webhook_url",
        ] {
            assert!(secret(key), "{key}");
        }
    }

    #[test]
    fn roles_of_record_fields() {
        assert_eq!(roles(&norm("key")), (true, false));
        assert_eq!(roles(&norm("Name")), (true, false));
        assert_eq!(roles(&norm("old_value")), (false, true));
        assert_eq!(roles(&norm("newValue")), (false, true));
        assert_eq!(roles(&norm("user")), (false, false));
    }

    #[test]
    fn huge_keys_stay_linear() {
        let key = "a_".repeat(500_000) + "password";
        let n = norm(&key);
        assert!(default_secret(&n));
        assert!(!default_safe(&n));
    }
}
