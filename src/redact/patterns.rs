//! Value shapes: secrets recognised by what they look like, wherever they sit.
//!
//! Each shape carries literal hints; one Aho-Corasick pass over the string
//! says which hints occur, and only those shapes' regexes run (the Datadog
//! agent measured -72% from this). Every regex is the Rust `regex` crate's,
//! linear in the input, so no string can make the scan blow up.
//!
//! A match yields the byte span of the *secret part* only (the password of a
//! URL, the token after `Bearer`, the body of a PEM block, the value of a
//! `key=value` pair), so the rest of the text stays readable.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use memchr::memmem::Finder;
use regex::Regex;

use super::keys::KeyInfo;

/// One bit per shape, set when one of its hints occurs.
const PEM: u32 = 1;
const URL: u32 = 1 << 1;
const AUTH: u32 = 1 << 2;
const JWT: u32 = 1 << 3;
const TOKENS: u32 = 1 << 4;
const KV: u32 = 1 << 5;
const FLAG: u32 = 1 << 6;
/// Webhook URLs whose path is the credential.
const HOOK: u32 = 1 << 7;
const PCT: u32 = 1 << 8;
const XML: u32 = 1 << 9;
const NETRC: u32 = 1 << 10;
const CMD: u32 = 1 << 11;
const SQL: u32 = 1 << 12;
const CARD: u32 = 1 << 13;
/// Secrets passed as quoted arguments in code.
const CALL: u32 = 1 << 14;
/// Redis's `AUTH` command.
const REDIS: u32 = 1 << 15;
/// Secret names that only the CSV header and `.properties` scans look for.
const NAMES: u32 = 1 << 16;

/// Literal hints (matched ASCII case-insensitively) and the shapes they wake.
const HINTS: &[(&str, u32)] = &[
    ("-----begin", PEM),
    // Its `--` pair is the flags' one: no bit of its own.
    ("---- begin ssh2", PEM),
    ("putty-user-key-file", PEM),
    ("//", URL),
    ("bearer", AUTH),
    ("basic", AUTH),
    ("token", AUTH),
    ("apikey", AUTH),
    ("api-key", AUTH),
    ("eyj", JWT),
    ("zxlk", JWT),
    ("ewogic", JWT),
    ("ls0tls1crudjt", JWT),
    ("akia", TOKENS),
    ("asia", TOKENS),
    ("abia", TOKENS),
    ("acca", TOKENS),
    ("a3t", TOKENS),
    ("ghp_", TOKENS),
    ("gho_", TOKENS),
    ("ghu_", TOKENS),
    ("ghs_", TOKENS),
    ("ghr_", TOKENS),
    ("github_pat_", TOKENS),
    ("glpat-", TOKENS),
    ("glptt-", TOKENS),
    ("gldt-", TOKENS),
    ("glrt-", TOKENS),
    ("gloas-", TOKENS),
    ("glcbt-", TOKENS),
    ("glimt-", TOKENS),
    ("glagent-", TOKENS),
    ("glsoat-", TOKENS),
    ("glft-", TOKENS),
    ("glffct-", TOKENS),
    ("xox", TOKENS),
    ("xapp-", TOKENS),
    ("_live_", TOKENS),
    ("_test_", TOKENS),
    ("_prod_", TOKENS),
    ("whsec_", TOKENS),
    ("sk-", TOKENS),
    ("aiza", TOKENS),
    ("ya29.", TOKENS),
    ("gocspx-", TOKENS),
    ("hf_", TOKENS),
    ("npm_", TOKENS),
    ("pypi-", TOKENS),
    ("sg.", TOKENS),
    ("hvs.", TOKENS),
    ("hvb.", TOKENS),
    ("_v1_", TOKENS),
    ("sntry", TOKENS),
    ("shpat_", TOKENS),
    ("shpca_", TOKENS),
    ("shppa_", TOKENS),
    ("shpss_", TOKENS),
    ("dapi", TOKENS),
    (":aa", TOKENS),
    ("q~", TOKENS),
    ("dckr_", TOKENS),
    ("sq0", TOKENS),
    // Square's `EAAA` and Facebook's access tokens (`EAAG`, `EAAB`, ...).
    ("eaa", TOKENS),
    ("hrku-", TOKENS),
    ("atatt3", TOKENS),
    ("lin_api_", TOKENS),
    ("age-secret-key-", TOKENS),
    ("glsa_", TOKENS),
    ("glc_", TOKENS),
    ("pmak-", TOKENS),
    ("pul-", TOKENS),
    ("nrak-", TOKENS),
    ("gsk_", TOKENS),
    ("pplx-", TOKENS),
    ("xai-", TOKENS),
    ("r8_", TOKENS),
    ("key-", TOKENS),
    ("lsv", TOKENS),
    ("tvly-", TOKENS),
    ("atlasv1", TOKENS),
    ("a3-", TOKENS),
    ("akcp", TOKENS),
    ("dp.", TOKENS),
    ("ezak", TOKENS),
    ("flwseck-", TOKENS),
    ("flwseck_test-", TOKENS),
    ("fo1_", TOKENS),
    ("ntn_", TOKENS),
    ("secret_", TOKENS),
    ("pnu_", TOKENS),
    ("tk-us-", TOKENS),
    ("xkeysib-", TOKENS),
    ("sk.eyj", TOKENS),
    ("api_org_", TOKENS),
    ("packagist_", TOKENS),
    ("nrii-", TOKENS),
    ("aaaaaaaaaaaaaaaaaaaaaa", TOKENS),
    ("access-", TOKENS),
    ("access_token$", TOKENS),
    ("figd_", TOKENS),
    ("1//0", TOKENS),
    ("sb_secret_", TOKENS),
    ("nfp_", TOKENS),
    ("bkua_", TOKENS),
    ("ccip", TOKENS),
    ("tskey-", TOKENS),
    ("pcsk_", TOKENS),
    ("pscale_tkn_", TOKENS),
    ("pscale_pw_", TOKENS),
    ("pscale_oauth_", TOKENS),
    ("rubygems_", TOKENS),
    ("clojars_", TOKENS),
    ("sgp_", TOKENS),
    ("squ_", TOKENS),
    ("sbp_", TOKENS),
    ("cfpat-", TOKENS),
    ("hooks.slack.com", HOOK),
    ("--", FLAG),
    (" -", FLAG),
    ("%3d", PCT),
    // Percent-encoded JSON, `%22password%22%3A%22...`; its `%3` is `%3d`'s pair.
    ("%3a", PCT),
    ("%253d", PCT),
    ("</", XML),
    ("identified", SQL),
    // A `.netrc` entry holds `password` too.
    ("password", SQL | NETRC),
    ("login", CMD),
    ("mysql", CMD),
    ("mariadb", CMD),
    ("sshpass", CMD),
    ("redis-cli", CMD),
    ("curl", CMD),
    ("sqlplus", CMD),
    ("auth ", REDIS),
    // A secret echoed into a command that stores it (`| gh secret set N`),
    // and a secret name.
    ("secret", CMD | NAMES),
    // Secret names that only the CSV header and `.properties` scans need
    // (see [`layout_shapes`]); the first three share a pair another hint
    // chose (`sw` of `password`, `ke` and `i_` of tokens), so the filter lets
    // no more text through; `pwd` takes a bit of its own.
    ("passwd", NAMES),
    ("api_key", NAMES),
    ("private_key", NAMES),
    ("pwd", NAMES),
    // An IFTTT webhook URL's key; `if` is a pair the tokens chose.
    ("ifttt", HOOK),
    // `rabbitmqctl`'s subcommands that take a password (`d_` and `sw` are
    // pairs other hints chose).
    ("add_user", NAMES),
    ("change_password", NAMES),
];

/// The horizontal spaces that may stand between a word and what it
/// introduces (a scheme and its credential, a flag and its value): a
/// no-break space pasted from a page, a control character, an invisible
/// one (a soft hyphen, a word joiner, a direction mark).
/// [`is_value_blank`] is the same set for the hand-written scanners.
macro_rules! blank_class {
    () => {
        r"[\t\x0B\x0C\x00 \u00A0\u00AD\u1680\u180E\u2000-\u200F\u202A-\u202F\u205F-\u206F\u3000\uFEFF]"
    };
}

struct Shapes {
    pairs: HintPairs,
    hints: AhoCorasick,
    pem_begin: Regex,
    auth: Regex,
    jwt: Regex,
    base64_json: Regex,
    tokens: Regex,
    hook: Regex,
    /// Finds `hook` (see [`scan_shapes`]), built once.
    webhooks: Finder<'static>,
    /// Finds `pagerduty.com/` (see [`scan_shapes`]), built once.
    pagerduty: Finder<'static>,
    flag: Regex,
    netrc: Regex,
    cmd: Regex,
    sql: Regex,
}

static SHAPES: LazyLock<Option<Shapes>> = LazyLock::new(|| {
    let hints = AhoCorasickBuilder::new()
        .kind(Some(AhoCorasickKind::DFA))
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(HINTS.iter().map(|(h, _)| h))
        .ok()?;
    Some(Shapes {
        pairs: HintPairs::new(HINTS.iter().map(|(h, _)| *h)),
        hints,
        // OpenVPN's static and tls-crypt keys are shared secrets; SSH2 is the
        // ssh.com (Tectia, PuTTYgen export) private key file.
        pem_begin: Regex::new(
            r"-----BEGIN(?:[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?| OpenVPN [A-Za-z0-9 \-]{0,40})-----|---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----",
        )
        .ok()?,
        // Any horizontal space between the scheme and the credential: a
        // no-break space pasted from a page, a control or invisible character;
        // or one line break (a wrapped log line, a folded HTTP header, a
        // Unicode line separator), with such spaces around it.
        auth: Regex::new(concat!(
            r"(?i)(?-u:\b)(?P<scheme>bearer|basic|token|apikey|api-key)(?:",
            blank_class!(),
            r"*(?:\r\n|[\n\r\x85\u2028\u2029])",
            blank_class!(),
            r"*|",
            blank_class!(),
            r"+)(?P<cred>[A-Za-z0-9\-._~+/]+=*)"
        ))
        .ok()?,
        // A JWT's `eyJ….eyJ` is distinctive enough to match after a letter or
        // digit too: `token%3DeyJ…` (URL-encoded) has no word start before it.
        // A Grafana API key is base64 of `{"k":"<secret>","n":…}`.
        jwt: Regex::new(
            r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*|(?-u:\b)ZXlK[A-Za-z0-9+/]{40,}={0,2}|eyJrIjoi[A-Za-z0-9+/]{40,}={0,2}",
        )
        .ok()?,
        // `{"` in base64 is `eyJ`, `{\n ` (pretty-printed, a service-account
        // file, two-space indent) `ewogIC`; `-----BEGIN` is `LS0tLS1CRUdJTi` (a
        // kubeconfig's key data). The standard and URL-safe alphabets both.
        base64_json: Regex::new(r"(?:eyJ|ewogIC)[A-Za-z0-9+/_\-]{12,}={0,2}|LS0tLS1CRUdJTi[A-Za-z0-9+/]{20,}={0,2}").ok()?,
        // Prefixes that no word contains match wherever they start: after a
        // URL-encoded separator (`token%3Dghp_…`), or glued to the token
        // before. Those that words do contain (`task-…`, `desk_test_…`,
        // `MSG.…`, `boxapp-…`) still need a word start.
        tokens: Regex::new(concat!(
            r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}(?-u:\b)",
            r"|gh[pousr]_[A-Za-z0-9]{36,255}",
            r"|github_pat_[A-Za-z0-9_]{22,255}",
            r"|gl(?:pat|ptt|dt|rt|oas|cbt|imt|agent|soat|ft|ffct)-[A-Za-z0-9_\-]{20,}",
            r"|xox[abposre]-[A-Za-z0-9\-]{10,}",
            r"|whsec_[A-Za-z0-9+/=]{20,}",
            r"|AIza[0-9A-Za-z_\-]{35}(?-u:\b)",
            r"|ya29\.[0-9A-Za-z_\-]{20,}",
            r"|GOCSPX-[0-9A-Za-z_\-]{20,}",
            r"|npm_[A-Za-z0-9]{36}(?-u:\b)",
            r"|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{20,}",
            r"|do[por]_v1_[a-f0-9]{64}(?-u:\b)",
            r"|sntry[su]_[A-Za-z0-9+/=_\-]{20,}",
            r"|shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}(?-u:\b)",
            r"|xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}",
            r"|FLWSECK(?:_TEST)?-[a-hA-H0-9]{32}-X",
            r"|packagist_[ou][ru]t_[a-f0-9]{68}(?-u:\b)",
            r"|api_org_[A-Za-z]{34}(?-u:\b)",
            r"|sb_secret_[A-Za-z0-9_\-]{20,}",
            // Netlify (see [`is_token`]), Buildkite, CircleCI (personal and
            // project tokens), Tailscale, Pinecone, PlanetScale, RubyGems,
            // Clojars, Sourcegraph, SonarQube, Supabase and Contentful.
            r"|nfp_[A-Za-z0-9_]{36,64}(?-u:\b)",
            r"|bkua_[a-f0-9]{40}(?-u:\b)",
            r"|CCIP(?:AT|RJ)_[A-Za-z0-9]{16,32}_[a-f0-9]{40}(?-u:\b)",
            r"|tskey-(?:auth|api|client|scim|webhook)-[A-Za-z0-9]{6,}-[A-Za-z0-9]{16,}",
            r"|pcsk_[A-Za-z0-9]{4,12}_[A-Za-z0-9]{40,}",
            r"|pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_=.\-]{32,64}",
            r"|rubygems_[a-f0-9]{48}(?-u:\b)",
            r"|CLOJARS_[a-z0-9]{60}(?-u:\b)",
            r"|sgp_(?:[a-f0-9]{16}_|local_)?[a-f0-9]{40}(?-u:\b)",
            r"|squ_[a-f0-9]{40}(?-u:\b)",
            r"|sbp_[a-f0-9]{40}(?-u:\b)",
            r"|CFPAT-[A-Za-z0-9_\-]{43}(?-u:\b)",
            r"|NRII-[A-Za-z0-9\-]{32}",
            r"|access-(?:sandbox|development|production)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            r"|access_token\$production\$[0-9a-z]{16}\$[0-9a-f]{32}",
            r"|(?-u:\b)(?:",
            r"(?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{10,99}",
            r"|sk-[A-Za-z0-9_\-]{20,}",
            r"|xapp-[A-Za-z0-9\-]{10,}",
            r"|hf_[A-Za-z0-9]{30,}",
            r"|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}",
            r"|hv[sb]\.[A-Za-z0-9_\-]{20,}",
            r"|dapi[a-f0-9]{32}(?-u:\b)",
            r"|(?:bot)?[0-9]{8,10}:AA[A-Za-z0-9_\-]{32,}",
            r"|[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31,34}",
            r"|dckr_(?:pat|oat)_[A-Za-z0-9_\-]{20,}",
            r"|sq0(?:atp|csp|idp)-[A-Za-z0-9_\-]{22,}",
            r"|EAAA[A-Za-z0-9_\-+=]{60,}",
            // A Facebook (Meta Graph API) access token.
            r"|EAA[A-Za-z0-9]{100,}",
            r"|HRKU-[A-Za-z0-9_\-]{20,}",
            r"|ATATT3[A-Za-z0-9_\-=]{40,}",
            r"|lin_(?:api|oauth)_[A-Za-z0-9]{30,}",
            r"|AGE-SECRET-KEY-1[0-9A-Z]{50,}",
            r"|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}(?-u:\b)",
            r"|glc_[A-Za-z0-9+/]{32,}={0,2}",
            r"|PMAK-[A-Fa-f0-9]{24}-[A-Fa-f0-9]{34}(?-u:\b)",
            r"|pul-[a-f0-9]{40}(?-u:\b)",
            r"|NRAK-[A-Z0-9]{27}(?-u:\b)",
            r"|gsk_[A-Za-z0-9]{40,}",
            r"|pplx-[A-Za-z0-9]{40,}",
            r"|xai-[A-Za-z0-9]{60,}",
            r"|r8_[A-Za-z0-9]{30,}",
            // Mailgun's private API key (see [`is_token`]).
            r"|key-[0-9a-z]{32}(?-u:\b)",
            r"|lsv2_(?:pt|sk)_[A-Za-z0-9_]{30,}",
            r"|tvly-[A-Za-z0-9_\-]{24,}",
            r"|[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-=]{60,}",
            // 1Password's account secret key.
            r"|A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}(?-u:\b)",
            r"|AKCp[A-Za-z0-9]{69}(?-u:\b)",
            // Doppler's tokens; a service token names its config (`dp.st.prd.…`).
            r"|dp\.(?:pt|st(?:\.[a-z0-9_\-]{2,35})?|ct|sa|scim|audit)\.[A-Za-z0-9]{40,44}(?-u:\b)",
            r"|EZAK[A-Za-z0-9]{54}(?-u:\b)",
            r"|fo1_[A-Za-z0-9_\-]{43}",
            // Notion's integration tokens, the current form and the legacy one.
            r"|ntn_[0-9]{11}[A-Za-z0-9]{35}",
            r"|secret_[A-Za-z0-9]{43}(?-u:\b)",
            r"|pnu_[A-Za-z0-9]{36}(?-u:\b)",
            r"|tk-us-[A-Za-z0-9_\-]{48}",
            // Mapbox's secret token (its public one is `pk.`).
            r"|sk\.eyJ[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-]{20,}",
            // An X (Twitter) app's bearer token.
            r"|A{22}[A-Za-z0-9%]{80,}",
            r"|figd_[A-Za-z0-9_\-]{40,}",
            // A Google OAuth refresh token.
            r"|1//0[A-Za-z0-9_\-]{40,}",
            r"|(?:duffel|shippo)_(?:live|test)_[A-Za-z0-9_\-=]{40,43}",
            r")"
        ))
        .ok()?,
        // Slack's and Teams' path after the kind is the credential; Discord's
        // token follows the webhook's id, which stays.
        hook: Regex::new(concat!(
            r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<path>[A-Za-z0-9+/_\-]{8,})",
            r"|(?i:discord(?:app)?\.com/api/(?:v[0-9]+/)?webhooks/)[0-9]+/(?P<token>[A-Za-z0-9_\-]{20,})",
            r#"|(?i:\.webhook\.office\.com/webhookb2|outlook\.office(?:365)?\.com/webhook)/(?P<teams>[^\s"'<>]{8,})"#,
            // Zapier's catch hook, a Mattermost hook's 26-character id, a
            // Rocket.Chat hook's token, a Feishu/Lark bot hook, a WeCom bot
            // key, an IFTTT Maker key.
            r"|hooks\.zapier\.com/hooks/(?:catch|standard)/[0-9]+/(?P<zap>[A-Za-z0-9\-]{6,})",
            r"|/hooks/(?:(?P<mm>[a-z0-9]{26})(?-u:\b)|[A-Za-z0-9]{17,24}/(?P<rc>[A-Za-z0-9]{24,}))",
            r"|open\.(?:feishu\.cn|larksuite\.com)/open-apis/bot/v2/hook/(?P<lark>[A-Za-z0-9\-]{20,})",
            r"|qyapi\.weixin\.qq\.com/cgi-bin/webhook/send\?key=(?P<wecom>[A-Za-z0-9\-]{20,})",
            r"|maker\.ifttt\.com/(?:trigger/[^/\s]+/(?:json/)?with/key|use)/(?P<ifttt>[A-Za-z0-9_\-]{16,})",
            // A PagerDuty integration key in the Events API's URL: it opens an incident.
            r"|events(?:\.eu)?\.pagerduty\.com/integration/(?P<pd>[A-Za-z0-9]{32})(?-u:\b)"
        ))
        .ok()?,
        webhooks: Finder::new(b"hook"),
        pagerduty: Finder::new(b"pagerduty.com/"),
        // `--db-password hunter2`, `-storepass hunter2`, `-pw hunter2` (the
        // `=` form is the `kv` shape), the same spaces as after an auth
        // scheme before the flag and between flag and value; the key rules
        // judge the flag's name. In an argument list's text (`['--password',
        // 'pw']`, a `CalledProcessError`'s message, a JSON array) the flag's
        // closing quote and a comma stand between them (`list`).
        flag: Regex::new(concat!(
            r#"(?:^|[\s"']|"#,
            blank_class!(),
            r#")--?(?P<k>[A-Za-z0-9][\w.\-]*)(?:"#,
            blank_class!(),
            r#"+|(?P<list>["'] ?, ?))(?P<v>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'\-][^\s"']*)"#
        ))
        .ok()?,
        // `.netrc` entries: `machine h login u password p`, on one line or
        // several (an entry starts with `machine`: prose has `login ... password`).
        netrc: Regex::new(
            r#"(?i)(?:^|\s)machine\s+\S+(?:\s+(?:login|account|port)\s+\S+)*\s+password\s+(?P<v>[^\s"']+)"#,
        )
        .ok()?,
        // Command lines whose password flag is a short letter, which only
        // the command says is a password: `mysql -pSECRET` (glued: `-p x`
        // prompts), `sshpass -p x`, `docker login -p x`, `az login -p x`,
        // `mongo -p x`, `redis-cli -a x`, `ldapsearch -w x`, `sqlcmd -P x`,
        // `zip -P x`, `7z -px`, `ssh-keygen -N x`, `ConvertTo-SecureString x`,
        // `ipmitool -P x`, `mosquitto_pub -P x`,
        // `curl -u user:x`, `smbclient -U user%x`, `sqlplus user/x@db`,
        // `echo x | docker login --password-stdin` (`sudo -S`, `gpg --passphrase-fd 0`,
        // `gh auth login --with-token`,
        // `gh secret set N`),
        // `gh secret set N --body x`, `az keyvault secret set ... --value x`,
        // `aws ssm put-parameter ... --value x`.
        // Written with `[ \t]` for a
        // space; any of `blank_class!` stands for one (a command pasted from a page).
        // The words between a command and its flag are lazy (`??`): the first
        // flag after the command is its value's, not a later one on the line.
        cmd: Regex::new(&concat!(
            r#"(?:^|[\s;&|(`"'])(?:"#,
            r#"(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlcheck|mysqlsh|mariadb|mariadb-dump)(?:[ \t][^\n;&|]*?)??[ \t]-p(?P<glued>[^\s"']+)"#,
            r#"|(?:(?:sshpass|twine|mongo(?:sh|dump|restore|export|import|stat|top|files)?)(?:[ \t][^\n;&|]*?)??[ \t]-p"#,
            r#"|(?:docker|podman|buildah|nerdctl|helm|oras|skopeo|az|oc|cf)[ \t][^\n;&|]*?login(?:[ \t][^\n;&|]*?)??[ \t]-p"#,
            r#"|(?:zip|unzip|zipcloak)(?:[ \t][^\n;&|]*?)??[ \t]-P"#,
            r#"|ssh-keygen(?:[ \t][^\n;&|]*?)??[ \t]-[NP]"#,
            r#"|(?i:convertto-securestring)(?:[ \t]+-String)?"#,
            r#"|redis-cli(?:[ \t][^\n;&|]*?)??[ \t]-a"#,
            r#"|ldap(?:search|modify|add|delete|compare|modrdn|passwd|whoami|exop|url)(?:[ \t][^\n;&|]*?)??[ \t]-w"#,
            r#"|(?:sqlcmd|bcp|osql|isql)(?:[ \t][^\n;&|]*?)??[ \t]-P"#,
            // A BMC's password, an MQTT broker's (SNMP's: see [`snmp_spans`]).
            r#"|(?:ipmitool|mosquitto_(?:pub|sub|rr))(?:[ \t][^\n;&|]*?)??[ \t]-P"#,
            r#"|openssl(?:[ \t][^\n;&|]*?)??[ \t]-k[ \t]"#,
            // Commands that store a secret: its value is one whatever its name.
            r#"|gh[ \t]+secret[ \t]+set(?:[ \t][^\n;&|]*?)??[ \t](?:--body=?|-b)"#,
            r#"|az[ \t]+keyvault[ \t]+secret[ \t]+set(?:[ \t][^\n;&|]*?)??[ \t]--value=?"#,
            // A Parameter Store value: a `String` may be a secret stored as
            // one too, and an overwrite need not say its type.
            r#"|aws[ \t]+ssm[ \t]+put-parameter(?:[ \t][^\n;&|]*?)??[ \t]--value=?"#,
            r#")[ \t]*(?P<arg>"[^"]*"|'[^']*'|[^\s"'\-][^\s"']*)"#,
            r#"|curl(?:[ \t][^\n;&|]*?)??[ \t](?:-u|--user|-U|--proxy-user)[ \t]*["']?[^\s:"']*:(?P<userpass>[^\s"']+)"#,
            r#"|(?:7z|7za|7zr|7zz|rar|unrar)(?:[ \t][^\n;&|]*?)??[ \t]-p(?P<packed>[^\s"']+)"#,
            r#"|(?:smbclient|rpcclient|smbcacls|smbget)(?:[ \t][^\n;&|]*?)??[ \t](?:-U|--user)[ \t]*["']?[^\s%"']*%(?P<pct>[^\s"']+)"#,
            r#"|sqlplus[ \t]+(?:-\w+[ \t]+)*["']?[^\s/"'@]+/(?P<slash>[^\s@"']+)"#,
            // `vault login TOKEN` (the token method's positional word; other
            // methods take `username=... password=...`, which are pairs).
            r#"|vault[ \t]+login(?:[ \t]+-[^\s=]+(?:=[^\s"']*)?)*[ \t]+(?P<vault>"[^"\n]*"|'[^'\n]*'|[^\s"'=<>|;&\-][^\s"'=<>|;&]*)(?:[\s;&|)"'\]]|$)"#,
            // A password echoed into a command that reads it from stdin; the
            // command ends at a blank, the line's end or the next command.
            // Or into one that stores it: `gh secret set N`, `wrangler secret
            // put N`, `docker secret create N -`, `gcloud secrets ... --data-file=-`.
            r#"|echo(?:[ \t]+-[neE]+)*[ \t]+(?P<piped>"[^"\n]*"|'[^'\n]*'|[^\s"'|;&$][^\s"'|;&]*)[ \t]*\|[ \t]*(?:[^\n|;&]*?[ \t](?:--password-stdin|--with-token|--passphrase-fd[ \t=]*0|--data-file[ \t=]*-)|(?:[^\n|;&]*?[ \t])?secrets?[ \t]+(?:set|put|create|add)|sudo(?:[ \t][^\n|;&]*?)?[ \t]-[A-Za-z]*S)(?:[ \t]|[\r\n;&|)]|$)"#,
            r#")"#
        ).replace(r"[ \t]", blank_class!()))
        .ok()?,
        // SQL statements: `IDENTIFIED BY 'x'` (unquoted too after `CREATE
        // USER u`, Oracle), `WITH PASSWORD 'x'`, `PASSWORD('x')`,
        // `SET PASSWORD FOR u = 'x'`. Prose has `identified by email` and
        // `the password "policy"`: those need their SQL context.
        sql: Regex::new(concat!(
            r#"(?i)(?-u:\b)(?:"#,
            r#"(?:create|alter)\s+(?:user|role|login)\s+\S+\s+identified(?:\s+with\s+\S+)?\s+by(?:\s+(?:password|values))?\s+(?:(?P<bq>'(?:[^'\\\n]|\\.|'')*')|(?P<bare>[^\s'";,()]+))"#,
            r#"|(?:identified(?:\s+with\s+\S+)?\s+by(?:\s+(?:password|values))?\s+|with\s+(?:(?:un)?encrypted\s+)?password\s+|password\s*\(\s*|set\s+password(?:\s+for\s+\S+)?\s*=\s*(?:password\s*\(\s*)?"#,
            // PostgreSQL's `CREATE ROLE app WITH LOGIN PASSWORD '...'`, options
            // before the password, within the statement (unbounded: a bounded
            // repeat of a Unicode class compiles to that many copies of it).
            r#"|(?:create|alter)\s+(?:user|role)\s+(?:"[^"\n]*"|[^\s;'"]+)(?:\s+[^;'"\n]*?)??\s+password\s+)"#,
            r#"(?P<quoted>'(?:[^'\\\n]|\\.|'')*'|"(?:[^"\\\n]|\\.)*"))"#
        ))
        .ok()?,
    })
});

/// A filter in front of the hint automaton: one byte pair (ASCII case
/// folded) chosen from each hint, one another hint chose already or else
/// the least common in ordinary text; a pair no hint needs in the end is
/// dropped. A string in which no chosen pair
/// occurs cannot hold any hint, so the automaton is skipped. The pairs
/// that begin with the `k`th first byte are bit `k`: `first[x] & second[y]`
/// has it exactly when `x`, `y` are one of them in either case, so each pair of adjacent bytes costs two table
/// loads and no branch. Three more bits ride along: [`SEP_BIT`],
/// [`DIGITS_BIT`] and [`CALL_BIT`].
struct HintPairs {
    /// Bit `k`: the byte begins the chosen pairs of bit `k`; [`SEP_BIT`]: every byte;
    /// [`DIGITS_BIT`]: a digit.
    first: Box<[u64; 256]>,
    /// Bit `k`: the byte ends a chosen pair of bit `k`; [`SEP_BIT`]: `=`, `:` and
    /// the last byte of their fullwidth forms; [`DIGITS_BIT`]: a digit.
    second: Box<[u64; 256]>,
    /// How many bits the chosen pairs take, one per first byte (beyond
    /// `LAST_PAIR_BIT + 1` they share the last).
    #[cfg_attr(not(test), allow(dead_code))]
    chosen: usize,
}

/// The bit of "a `key=value` separator follows", set in every `first` entry.
const SEP_BIT: u64 = 1 << 63;
/// The bit of "two digits stand together", set for every digit in both tables.
const DIGITS_BIT: u64 = 1 << 62;
/// The bit of "a call's first argument may be quoted": `(` then a quote, a
/// backslash (an escaped quote) or a space (`define( 'K', 'x' )`). One bit
/// for the [`CALL`] shape's five pairs, as hints they would take five.
const CALL_BIT: u64 = 1 << 61;
/// Pairs beyond this one share its bit: more candidates, never a miss.
const LAST_PAIR_BIT: usize = 60;

impl HintPairs {
    fn new<'h>(hints: impl Iterator<Item = &'h str>) -> Self {
        let mut common = vec![0u32; 1 << 16];
        for pair in ORDINARY.as_bytes().windows(2) {
            common[Self::folded(pair[0], pair[1])] += 1;
        }
        let seen = |&(a, b): &(u8, u8)| common[Self::folded(a, b)];
        // Every hint has at least two bytes (a test pins it).
        let hint_pairs: Vec<Vec<(u8, u8)>> = hints
            .map(|hint| {
                hint.as_bytes().windows(2).map(|w| (w[0].to_ascii_lowercase(), w[1].to_ascii_lowercase())).collect()
            })
            .collect();
        let mut chosen: Vec<(u8, u8)> = Vec::new();
        for pairs in &hint_pairs {
            let Some(least) = pairs.iter().map(seen).min() else { continue };
            // A pair already chosen for another hint first: its bit wakes the
            // automaton anyway, so sharing it lets no more text through and
            // saves a bit. Otherwise the least seen in the sample, of the
            // rarest letters.
            let pair = pairs.iter().filter(|p| chosen.contains(p)).min_by_key(|p| seen(p)).or_else(|| {
                pairs.iter().filter(|p| seen(p) == least).max_by_key(|&&(a, b)| letter_rarity(a) + letter_rarity(b))
            });
            if let Some(&pair) = pair.filter(|p| !chosen.contains(p)) {
                chosen.push(pair);
            }
        }
        // A pair chosen early may be needed by no hint once later ones chose
        // theirs (`-----begin` took `-k`, then `--` covered it): such pairs
        // are dropped, the most common in the sample first, which saves bits
        // and lets less ordinary text through.
        let mut by_commonness = chosen.clone();
        by_commonness.sort_by_key(|p| std::cmp::Reverse(seen(p)));
        for pair in by_commonness {
            let spare = hint_pairs.iter().all(|pairs| pairs.iter().any(|q| *q != pair && chosen.contains(q)));
            if spare {
                chosen.retain(|q| *q != pair);
            }
        }
        // Pairs that begin with the same byte share a bit: `first[a] &
        // second[y]` then has it for exactly their pairs, none crossed, so
        // the filter lets no more text through and the bits go further.
        let mut leads: Vec<u8> = Vec::new();
        for &(a, _) in &chosen {
            if !leads.contains(&a) {
                leads.push(a);
            }
        }
        let count = leads.len();
        let mut first = Box::new([SEP_BIT; 256]);
        let mut second = Box::new([0u64; 256]);
        for (a, b) in chosen {
            let k = leads.iter().position(|&l| l == a).unwrap_or(LAST_PAIR_BIT);
            let bit = 1u64 << k.min(LAST_PAIR_BIT);
            // Both cases, so the scan compares raw bytes.
            for x in [a, a.to_ascii_uppercase()] {
                first[usize::from(x)] |= bit;
            }
            for y in [b, b.to_ascii_uppercase()] {
                second[usize::from(y)] |= bit;
            }
        }
        second[usize::from(b'=')] |= SEP_BIT;
        second[usize::from(b':')] |= SEP_BIT;
        // The last bytes of the fullwidth `＝` and `：` (see [`fullwidth_sep`]):
        // they end other non-ASCII characters too, which costs those texts a
        // look for separators, never ASCII text.
        second[0x9D] |= SEP_BIT;
        second[0x9A] |= SEP_BIT;
        for d in b'0'..=b'9' {
            first[usize::from(d)] |= DIGITS_BIT;
            second[usize::from(d)] |= DIGITS_BIT;
        }
        first[usize::from(b'(')] |= CALL_BIT;
        for q in [b'"', b'\'', b'\\', b' '] {
            second[usize::from(q)] |= CALL_BIT;
        }
        Self { first, second, chosen: count }
    }

    fn folded(a: u8, b: u8) -> usize {
        (usize::from(a.to_ascii_lowercase()) << 8) | usize::from(b.to_ascii_lowercase())
    }

    #[cfg(test)]
    fn may_hold_hint(&self, s: &str) -> bool {
        self.prefilter(s).0
    }

    /// One pass over the bytes: whether a hint's pair may occur, whether a
    /// `key=value` separator (`=` or `:`, or what may end a fullwidth one)
    /// occurs, whether two digits stand together (a card number may), and
    /// whether a call's quoted argument may.
    fn prefilter(&self, s: &str) -> (bool, bool, bool, bool) {
        let bytes = s.as_bytes();
        let (first, second) = (&*self.first, &*self.second);
        let mut seen = 0u64;
        if let Some((&head, rest)) = bytes.split_first() {
            // Each byte is loaded once, as the second of one pair and the first of the next.
            let mut before = first[usize::from(head)];
            for &b in rest {
                seen |= before & second[usize::from(b)];
                before = first[usize::from(b)];
            }
        }
        let sep = seen & SEP_BIT != 0 || bytes.first().is_some_and(|&b| is_sep(b));
        (seen & !(SEP_BIT | DIGITS_BIT | CALL_BIT) != 0, sep, seen & DIGITS_BIT != 0, seen & CALL_BIT != 0)
    }
}

fn is_sep(b: u8) -> bool {
    b == b'=' || b == b':'
}

/// English letter frequency rank (rarer is larger); other bytes rank as rare.
fn letter_rarity(b: u8) -> usize {
    b"etaoinshrdlcumwfgypbvkjxqz".iter().position(|&c| c == b.to_ascii_lowercase()).unwrap_or(26)
}

/// A sample of ordinary values (prose, identifiers, paths, addresses): the
/// filter picks from each hint the byte pair least seen here. Only the
/// filter's speed depends on it, never what it lets through.
const ORDINARY: &str = "applied changes to the resource graph; the quick brown fox jumps over the lazy dog. \
    Please review and approve the proposed plan before it is executed by the scheduler. \
    /srv/app/module_3.py /home/user/projects/report.txt C:\\Users\\admin\\Documents \
    step_completed plan_applied config_changed session_created resource_modified entity_deleted \
    alice bob carol admin operator prod staging eu-west-1 us-east-2 10.0.0.1 192.168.1.20 \
    req-123 a@example.com rotated creds Content-Type application/json text/html; charset=utf-8 \
    user_identity project_name actor_name session_id plan_id event_type max_tokens retries timeout \
    2024-05-01T12:30:00+00:00 v1.2.3 build #4512 passed in 3.2s; 17 files changed, 240 insertions \
    db.internal api.example.com cache.local webhook notebook lookup outlook facebook booking \
    smtp_password user_profile http_proxy app_port db_host log_level sub_task is_active";

/// Whether the static shapes compiled (they are constants; a test pins it).
pub fn ready() -> bool {
    SHAPES.is_some()
}

/// Collects into `spans` the byte ranges of `s` that hold a secret.
/// `key_info` judges the key of a `key=value` pair.
#[inline]
pub fn find_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    scan(s, key_info, spans, true);
}

/// [`find_spans`]; `decode` says whether base64 JSON is decoded and
/// scanned (one level: what it decodes to is not decoded again). Inlined:
/// most text wakes no shape and returns here, before the call to the
/// shapes, whose large frame would cost more than the filter.
#[inline]
fn scan(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>, decode: bool) {
    let Some(sh) = SHAPES.as_ref() else {
        // Unreachable with the constant patterns; fail closed, never open.
        spans.push((0, s.len()));
        return;
    };
    let wake = wake_of(sh, s);
    if wake != 0 {
        scan_shapes(s, sh, wake, key_info, spans, decode);
    }
}

/// The shapes whose hints occur in `s`, one bit each.
#[inline]
fn wake_of(sh: &Shapes, s: &str) -> u32 {
    let mut wake = 0u32;
    // Most values hold no hint: the pair filter rules that out for most of
    // them without running the automaton. `key=value` needs a separator; its
    // keys go through the (cached) key rules, so no word list is needed here
    // and user-added names work too.
    let (may_hint, has_sep, digits, call) = sh.pairs.prefilter(s);
    if may_hint {
        for hit in sh.hints.find_overlapping_iter(s) {
            wake |= HINTS[hit.pattern().as_usize()].1;
        }
    }
    if has_sep {
        wake |= KV;
    }
    if call {
        wake |= CALL;
    }
    if digits && s.len() >= super::cards::MIN_DIGITS {
        wake |= CARD;
    }
    if s.starts_with('-') {
        // A flag at the very start has no blank before it for a hint.
        wake |= FLAG;
    }
    wake
}

/// Runs the woken shapes over `s`.
fn scan_shapes(
    s: &str,
    sh: &Shapes,
    wake: u32,
    key_info: &mut dyn FnMut(&str) -> KeyInfo,
    spans: &mut Vec<(usize, usize)>,
    decode: bool,
) {
    if wake & PEM != 0 {
        pem_spans(s, sh, spans);
    }
    if wake & URL != 0 {
        if s.contains('@') {
            url_passwords(s, spans);
        }
        mc_alias_spans(s, spans);
    }
    if wake & AUTH != 0 {
        // A rejected match (`token Bearer x`: "Bearer" is no credential)
        // resumes after its scheme word, so the next scheme is still seen.
        let mut from = 0;
        while let Some(c) = sh.auth.captures_at(s, from) {
            let (Some(scheme), Some(cred)) = (c.name("scheme"), c.name("cred")) else { break };
            if credential_like(scheme.as_str(), cred.as_str()) {
                spans.push((cred.start(), cred.end()));
                from = cred.end();
            } else {
                from = scheme.end();
            }
        }
    }
    if wake & JWT != 0 {
        spans.extend(sh.jwt.find_iter(s).map(|m| (m.start(), m.end())));
        if decode {
            base64_json_spans(s, sh, key_info, spans);
        }
    }
    if wake & TOKENS != 0 {
        token_spans(s, sh, spans);
    }
    if wake & CARD != 0 {
        super::cards::spans(s, spans);
    }
    // Webhooks other than Slack's have no hint of their own (`hook` would
    // take one of the pair filter's few bits): a URL that holds it is looked at.
    // PagerDuty's events URL holds no `hook`: its host is looked for too.
    if wake & HOOK != 0
        || (wake & URL != 0 && (sh.webhooks.find(s.as_bytes()).is_some() || sh.pagerduty.find(s.as_bytes()).is_some()))
    {
        for c in sh.hook.captures_iter(s) {
            for group in ["path", "token", "teams", "zap", "mm", "rc", "lark", "wecom", "ifttt", "pd"] {
                push_group(&c, group, spans);
            }
        }
    }
    if wake & KV != 0 {
        kv_spans(s, key_info, spans);
        go_dsn_spans(s, spans);
    }
    if wake & PCT != 0 {
        pct_spans(s, key_info, spans);
    }
    if wake & XML != 0 {
        xml_spans(s, key_info, spans);
    }
    if wake & NETRC != 0 {
        for c in sh.netrc.captures_iter(s) {
            if let Some(v) = c.name("v") {
                if !keep_value(v.as_str()) {
                    spans.push((v.start(), v.end()));
                }
            }
        }
    }
    // Most commands have no hint of their own (a pair bit each, of the
    // filter's few): their password flag's ` -` wakes `FLAG`.
    if wake & (CMD | FLAG) != 0 {
        cmd_spans(s, sh, spans);
        // An argument list's text (`['sshpass', '-p', 'pw']`, as a
        // `CalledProcessError`'s message shows it): read again with each
        // `', '` between items as blanks of the same length, so the spans
        // found in that copy are the text's own.
        if let Some(spaced) = list_items_spaced(s) {
            cmd_spans(&spaced, sh, spans);
        }
    }
    if wake & FLAG != 0 {
        snmp_spans(s, spans);
    }
    if wake & (CALL | REDIS | SQL | AUTH | TOKENS | NAMES) != 0 {
        layout_shapes(s, wake, key_info, spans);
    }
    if wake & SQL != 0 {
        for c in sh.sql.captures_iter(s) {
            for group in ["bq", "bare", "quoted"] {
                if let Some(v) = c.name(group) {
                    push_word(v.start(), v.as_str(), spans);
                }
            }
        }
    }
    if wake & FLAG != 0 {
        // Where the command of the last here-string read ends: found once for
        // all the here-strings before it, so a long line of them stays linear.
        let mut command_end = 0;
        for c in sh.flag.captures_iter(s) {
            if let (Some(k), Some(v)) = (c.name("k"), c.name("v")) {
                let value = v.as_str().trim_matches(['"', '\'']);
                // In a list, the next item quoted, and not another flag.
                let list_item =
                    c.name("list").is_none_or(|_| v.as_str().starts_with(['"', '\'']) && !value.starts_with('-'));
                if list_item && key_info(k.as_str()).secret && !keep_value(value) && !shell_operator(value) {
                    if v.as_str() == "<<<" {
                        // A here-string (`--with-token <<< tok`): the value is the next word.
                        if v.end() >= command_end {
                            command_end = s[v.end()..].find(['\n', ';', '|', '&']).map_or(s.len(), |i| v.end() + i);
                        }
                        if let Some((a, z)) = shell_words(s, v.end(), command_end).next() {
                            push_word(a, &s[a..z], spans);
                        }
                    } else {
                        spans.push(unquote(v.start(), v.as_str()));
                    }
                }
            }
        }
    }
}

/// The shapes that only a secret's place in code or a table marks, out of
/// line: the common shapes' frame stays small.
#[inline(never)]
fn layout_shapes(s: &str, wake: u32, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    if wake & CALL != 0 {
        call_spans(s, key_info, spans);
    }
    if wake & REDIS != 0 {
        redis_auth_spans(s, spans);
    }
    if wake & (SQL | AUTH | TOKENS | NAMES) != 0 {
        // Looked for only where a word woke one of these (`password`,
        // `passwd`, `pwd`, `token`, `api_key`, `secret`...). A table has
        // more than one line.
        if memchr::memchr(b'\n', s.as_bytes()).is_some() {
            csv_spans(s, key_info, spans);
        }
        blank_pair_spans(s, key_info, spans);
    }
    // `npm config set _auth x` wakes only the `auth ` of Redis's command.
    if wake & (SQL | AUTH | TOKENS | NAMES | REDIS) != 0 {
        config_set_spans(s, key_info, spans);
    }
    if wake & (SQL | AUTH | NAMES) != 0 {
        rclone_spans(s, key_info, spans);
        // An argument list's text (`['htpasswd', '-b', ...]`, as a
        // `CalledProcessError`'s message shows it), read again with its item
        // separators as blanks (see [`list_items_spaced`]).
        if let Some(spaced) = list_items_spaced(s) {
            let mut found = Vec::new();
            rclone_spans(&spaced, key_info, &mut found);
            if wake & NAMES != 0 {
                htpasswd_spans(&spaced, &mut found);
                rabbitmqctl_spans(&spaced, &mut found);
            }
            spans.extend(found.into_iter().filter_map(|(a, z)| list_item_span(&spaced, a, z)));
        }
    }
    if wake & NAMES != 0 {
        k8s_secret_spans(s, spans);
        secret_literal_spans(s, spans);
        secrets_set_spans(s, spans);
        chpasswd_spans(s, spans);
        htpasswd_spans(s, spans);
        rabbitmqctl_spans(s, spans);
    }
}

static CHPASSWD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"chpasswd"));
static KIND: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"kind:"));

/// A Kubernetes Secret written as YAML text (`kubectl get secret -o yaml`,
/// a manifest): its `data` and `stringData` entries hold only secrets,
/// under names of any kind (`tls.key`, `url`), so every value under them is
/// masked, as in the dict and JSON forms, and so is `kubectl apply`'s copy
/// of the manifest in its `last-applied-configuration` annotation. Each
/// `---` document holding a `kind: Secret` line is read; in a `List`, its
/// other items' `data` too.
fn k8s_secret_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    if KIND.find(s.as_bytes()).is_none() || memchr::memchr(b'\n', s.as_bytes()).is_none() {
        return;
    }
    let mut doc = 0;
    while doc < s.len() {
        let end = s[doc..].find("\n---").map_or(s.len(), |n| doc + n + 1);
        let text = &s[doc..end];
        if yaml_kind_secret(text) {
            match yaml_list_items(text) {
                // A `List`'s items are judged one by one: a ConfigMap beside a Secret keeps its data.
                Some(items) => {
                    for (a, z) in items {
                        if yaml_kind_secret(&text[a..z]) {
                            k8s_data_spans(&text[a..z], doc + a, spans);
                        }
                    }
                }
                None => k8s_data_spans(text, doc, spans),
            }
        }
        doc = end.max(doc + 1);
    }
}

fn yaml_kind_secret(text: &str) -> bool {
    yaml_lines(text).any(|(_, _, key, value)| key == "kind" && unquote_yaml(value) == "Secret")
}

/// The items of the `items:` sequence of a YAML `List` in `text`, as byte
/// ranges (an item from its `- ` to the next one's or the sequence's end),
/// or `None` when `text` is no list (`kind: List`, `kind: SecretList`).
fn yaml_list_items(text: &str) -> Option<Vec<(usize, usize)>> {
    if !yaml_lines(text).any(|(_, _, key, value)| key == "kind" && unquote_yaml(value).ends_with("List")) {
        return None;
    }
    let mut lines = yaml_lines(text);
    let (_, items_indent, _, _) = lines.find(|&(_, _, key, value)| key == "items" && value.is_empty())?;
    let mut dash_col = None;
    let mut found: Vec<(usize, usize)> = Vec::new();
    let mut end = text.len();
    for (start, indent, _, _) in lines {
        let line = text[start..].split(['\n', '\r']).next().unwrap_or("");
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let col = line.len() - body.len();
        let dash = body == "-" || body.starts_with("- ");
        if dash && col >= items_indent && dash_col.is_none_or(|c| c == col) {
            dash_col = Some(col);
            if let Some(last) = found.last_mut() {
                last.1 = start;
            }
            found.push((start, text.len()));
        } else if dash_col.is_none_or(|c| col <= c) && indent <= items_indent {
            // Back at the `items:` key's level: the sequence has ended.
            end = start;
            break;
        }
    }
    if let Some(last) = found.last_mut() {
        last.1 = end;
    }
    Some(found)
}

static FROM_LITERAL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"--from-literal"));

/// The values of `kubectl create secret ... --from-literal=name=value` (and
/// `oc`'s): a Secret's literals are secrets whatever their names (`url`,
/// `conn`). A ConfigMap's line names no `secret`, and keeps them.
fn secret_literal_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    for at in FROM_LITERAL.find_iter(b) {
        let line_start = memchr::memrchr(b'\n', &b[..at]).map_or(0, |i| i + 1);
        if find_ascii_ci(&s[line_start..at], "secret").is_none() {
            continue;
        }
        let mut i = at + b"--from-literal".len();
        let blanks = b[i..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
        match b.get(i) {
            Some(b'=') => i += 1,
            _ if blanks > 0 => i += blanks,
            _ => continue,
        }
        let quote = match b.get(i) {
            Some(&q @ (b'\'' | b'"')) => {
                i += 1;
                Some(q)
            }
            _ => None,
        };
        let word_end = |from: usize, q: Option<u8>| {
            b[from..]
                .iter()
                .position(|&c| c == b'\n' || q.map_or(c.is_ascii_whitespace(), |q| c == q))
                .map_or(b.len(), |n| from + n)
        };
        let end = word_end(i, quote);
        if let Some(eq) = b[i..end].iter().position(|&c| c == b'=') {
            if i + eq + 1 < end {
                spans.push((i + eq + 1, end));
            }
        }
    }
}

static SECRETS_SET: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"secrets set"));

/// The values of `fly secrets set NAME=value NAME2=value2` (Doppler's,
/// Infisical's `secrets set` too): every value the command stores is a
/// secret, whatever its name; the names stay. Read up to the command's end.
fn secrets_set_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    for at in SECRETS_SET.find_iter(b) {
        let from = at + b"secrets set".len();
        let end = b[from..].iter().position(|&c| matches!(c, b'\n' | b';' | b'&' | b'|')).map_or(b.len(), |n| from + n);
        let mut i = from;
        while i < end {
            let blanks = b[i..end].iter().take_while(|c| c.is_ascii_whitespace()).count();
            i += blanks;
            let quote = match b.get(i) {
                Some(&q @ (b'\'' | b'"')) if i < end => Some(q),
                _ => None,
            };
            let word_end = match quote {
                Some(q) => b[i + 1..end].iter().position(|&c| c == q).map_or(end, |n| i + 1 + n + 1),
                None => b[i..end].iter().position(u8::is_ascii_whitespace).map_or(end, |n| i + n),
            };
            let word = &b[i..word_end];
            // `NAME=value` (or `"NAME=value"`); a flag (`--app x`) is not one.
            if !word.starts_with(b"-") {
                if let Some(eq) = word.iter().position(|&c| c == b'=') {
                    let v_end = if quote.is_some() { word_end - 1 } else { word_end };
                    if i + eq + 1 < v_end {
                        spans.push((i + eq + 1, v_end));
                    }
                }
            }
            i = word_end.max(i + 1);
        }
    }
}

/// The lines of YAML text: each line's start, its key's indent (a list
/// item's `- ` counts as indent), its key and value (`""` for a line with
/// no `key:`: the key is then the line's text).
fn yaml_lines(text: &str) -> impl Iterator<Item = (usize, usize, &str, &str)> {
    let mut at = 0;
    text.split_inclusive('\n').map(move |raw| {
        let start = at;
        at += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let body = line.trim_start_matches([' ', '-']);
        let indent = line.len() - body.len();
        match body.split_once(':') {
            Some((key, value)) if !key.is_empty() && !key.contains(' ') => (start, indent, key, value.trim()),
            _ => (start, indent, body, ""),
        }
    })
}

fn unquote_yaml(v: &str) -> &str {
    let v = v.split(" #").next().unwrap_or(v).trim();
    v.strip_prefix(['"', '\'']).and_then(|r| r.strip_suffix(['"', '\''])).unwrap_or(v)
}

/// Masks what the `data:`/`stringData:` blocks of `text` (at `base` in the
/// whole string) hold: each entry's value, and the lines of block values.
fn k8s_data_spans(text: &str, base: usize, spans: &mut Vec<(usize, usize)>) {
    let mut block: Option<usize> = None;
    for (start, indent, key, value) in yaml_lines(text) {
        let line = text[start..].split(['\n', '\r']).next().unwrap_or("");
        if line.trim().is_empty() {
            continue;
        }
        if let Some(outer) = block {
            if indent > outer {
                let line_start = base + start;
                match line.find(": ").or_else(|| line.strip_suffix(':').map(|l| l.len())) {
                    // `name: value`: the value, unless a block follows (`|`, `>`).
                    Some(colon) if !line[..colon].trim().contains(' ') => {
                        let v = value.trim();
                        if !v.is_empty() && !v.starts_with(['|', '>']) {
                            let v_at = line.len() - line[colon + 1..].trim_start().len();
                            spans.push((line_start + v_at, line_start + line.trim_end().len()));
                        }
                    }
                    // A block value's line.
                    _ => {
                        let lead = line.len() - line.trim_start().len();
                        spans.push((line_start + lead, line_start + line.trim_end().len()));
                    }
                }
                continue;
            }
            block = None;
        }
        if (key == "data" || key == "stringData") && value.is_empty() {
            block = Some(indent);
        } else if key.ends_with("last-applied-configuration") {
            // `kubectl apply`'s copy of the manifest, its data included.
            if value.is_empty() || value.starts_with(['|', '>']) {
                block = Some(indent);
            } else {
                // The key holds no `:`: the line's first one ends it.
                if let Some(colon) = line.find(':') {
                    let v_at = line.len() - line[colon + 1..].trim_start().len();
                    spans.push((base + start + v_at, base + start + line.trim_end().len()));
                }
            }
        }
    }
}

/// The command lines' spans (see `Shapes::cmd`).
fn cmd_spans(s: &str, sh: &Shapes, spans: &mut Vec<(usize, usize)>) {
    let mut read = (0, 0);
    for c in sh.cmd.captures_iter(s) {
        for group in ["glued", "packed", "arg", "userpass", "slash", "pct", "piped", "vault"] {
            if let Some(v) = c.name(group) {
                // A log line's `vault login failed: ...` names no token.
                if group == "vault" && (v.as_str().ends_with(':') || status_word(v.as_str())) {
                    continue;
                }
                push_word(v.start(), v.as_str(), spans);
                if group == "arg" {
                    repeated_flag(s, v.start(), v.end(), &mut read, spans);
                }
            }
        }
    }
}

static ITEM_SEP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"', '"));
static ITEM_SEP_DQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\", \""));

/// `s` with the separators of a list's text (`', '`, `", "`) turned into
/// as many blanks, or `None` when it holds none. The bytes replaced are
/// ASCII, so every offset stays a char boundary of `s` too.
fn list_items_spaced(s: &str) -> Option<String> {
    let b = s.as_bytes();
    // Both separators hold a comma: most texts have none, and one byte is looked for faster than two texts.
    if memchr::memchr(b',', b).is_none() || (ITEM_SEP.find(b).is_none() && ITEM_SEP_DQ.find(b).is_none()) {
        return None;
    }
    let mut out = b.to_vec();
    for at in ITEM_SEP.find_iter(b).chain(ITEM_SEP_DQ.find_iter(b)) {
        out[at..at + 4].fill(b' ');
    }
    String::from_utf8(out).ok()
}

/// A word's span in an argument list's spaced text without the quote and
/// bracket of the list's first or last item around it (`['htpasswd`, `pw']`).
fn list_item_span(s: &str, a: usize, z: usize) -> Option<(usize, usize)> {
    let word = &s[a..z];
    let open = word.len() - word.trim_start_matches(['[', '(']).len();
    let a = a + open + usize::from(word[open..].starts_with(['\'', '"']));
    // The list's closing `']` and whatever closes around it (`']'` in a
    // `CalledProcessError`'s message).
    let kept = word.trim_end_matches(['\'', '"', ']', ')']);
    let z = if word[kept.len()..].contains(['\'', '"']) { a.max(z - (word.len() - kept.len())) } else { z };
    (a < z).then_some((a, z))
}

/// The passwords fed to `chpasswd` as `user:password` lines: echoed into it
/// (`echo "bob:pw" | chpasswd`) or given as a here-string (`chpasswd <<<
/// "bob:pw"`). The user stays readable.
#[inline(never)]
fn chpasswd_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    // Each occurrence reads only up to its neighbours, not to its line's
    // ends: a long line of them stays linear.
    let mut floor = 0;
    let mut found = CHPASSWD.find_iter(b).peekable();
    while let Some(at) = found.next() {
        let ceiling = found.peek().copied().unwrap_or(b.len());
        let line_start = memchr::memrchr(b'\n', &b[floor..at]).map_or(floor, |i| floor + i + 1);
        let line_end = memchr::memchr(b'\n', &b[at..ceiling]).map_or(ceiling, |i| at + i);
        floor = at + 8;
        let after = &s[at + 8..line_end];
        let pair = if let Some(i) = after.find("<<<") {
            let from = at + 8 + i + 3;
            shell_words(s, from, line_end).next()
        } else {
            // `echo <pair> | [sudo] chpasswd`: the pipe's left side on this line.
            let before = &s[line_start..at];
            let pipe = before.rfind('|').map(|i| line_start + i);
            pipe.and_then(|p| {
                let echo = s[line_start..p].rfind("echo ").map(|i| line_start + i + 5)?;
                let mut words = shell_words(s, echo, p).filter(|&(a, _)| !s[a..].starts_with('-'));
                words.next()
            })
        };
        let Some((a, z)) = pair else { continue };
        let (va, vz) = unquote(a, &s[a..z]);
        if let Some(colon) = s[va..vz].find(':') {
            if va + colon + 1 < vz {
                spans.push((va + colon + 1, vz));
            }
        }
    }
}

/// Longest secret flag looked for again later in its command.
const FLAG_MAX: usize = 24;

/// The values of the secret flag before the value at `arg_start..arg_end`
/// given again later in its command (`--body x --body y`): the command uses
/// the last one. `read` is the end of the command last read and how far it
/// was read, so that each byte is read once however many matches a line has.
#[inline(never)]
fn repeated_flag(
    s: &str,
    arg_start: usize,
    arg_end: usize,
    read: &mut (usize, usize),
    spans: &mut Vec<(usize, usize)>,
) {
    let b = s.as_bytes();
    let head = s[..arg_start].trim_end_matches(is_value_blank).as_bytes();
    let tail = &head[head.len().saturating_sub(FLAG_MAX)..];
    let Some(word) = tail.iter().rposition(|c| matches!(c, b' ' | b'\t' | b'\n')) else { return };
    let flag = &tail[word + 1..];
    if flag.len() < 2 || flag[0] != b'-' || !flag.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'='))
    {
        return;
    }
    if arg_end >= read.0 {
        let end = s[arg_end..].find(['\n', ';', '|', '&', '>', '<']).map_or(s.len(), |i| arg_end + i);
        *read = (end, arg_end);
    }
    let (end, from) = (read.0, arg_end.max(read.1));
    read.1 = end;
    for hit in memchr::memmem::find_iter(&b[from..end], flag).map(|i| from + i) {
        let after = hit + flag.len();
        let glued = flag.ends_with(b"=");
        if !matches!(b[hit - 1], b' ' | b'\t') || !(glued || matches!(b.get(after), Some(b' ' | b'\t'))) {
            continue;
        }
        let mut words = shell_words(s, after, end);
        if let Some((a, z)) = words.next().filter(|&(a, _)| glued || !s[a..].starts_with('-')) {
            if glued && a != after {
                continue;
            }
            push_word(a, &s[a..z], spans);
        }
    }
}

/// Each run of the command `finder` finds (its name `name` bytes long) as a
/// word of its own followed by a blank: where its arguments start and where
/// the command ends (its line's end, `;`, `|`, `&` or a redirection).
fn command_args<'s>(s: &'s str, finder: &'s Finder<'static>, name: usize) -> impl Iterator<Item = (usize, usize)> + 's {
    let b = s.as_bytes();
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(off) = finder.find(&b[from..]) {
            let at = from + off;
            from = at + name;
            let word_start = at == 0 || matches!(b[at - 1], b' ' | b'\t' | b'\n' | b'/' | b'(' | b'`' | b'"' | b'\'');
            if !word_start || !matches!(b.get(at + name), Some(b' ' | b'\t')) {
                continue;
            }
            let end = s[at..].find(['\n', ';', '|', '&', '>', '<']).map_or(s.len(), |i| at + i);
            from = end;
            return Some((at + name, end));
        }
        None
    })
}

static HTPASSWD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"htpasswd"));

/// The password `htpasswd` takes in batch mode (`-b`) as its last word:
/// `htpasswd -bc file user pw`, `htpasswd -nb user pw` (no file with `-n`).
/// Without `-b` it prompts, and the words are a file and a user. Each
/// command is read up to its line's or the command's end.
#[inline(never)]
fn htpasswd_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    // The command, not a file (`/etc/nginx/.htpasswd`): a word of its own.
    for (args, end) in command_args(s, &HTPASSWD, b"htpasswd".len()) {
        let (mut batch, mut no_file) = (false, false);
        let mut positional = [None; 3];
        let mut count = 0;
        let mut words = shell_words(s, args, end);
        while let Some((a, z)) = words.next() {
            if let Some(flags) = s[a..z].strip_prefix('-') {
                batch |= flags.contains('b');
                no_file |= flags.contains('n');
                // `-C cost` and `-r rounds` take a value.
                if flags.ends_with(['C', 'r']) {
                    words.next();
                }
            } else if count < positional.len() {
                positional[count] = Some((a, z));
                count += 1;
            }
        }
        let password = if no_file { positional[1] } else { positional[2] };
        if let Some((a, z)) = password.filter(|_| batch) {
            push_word(a, &s[a..z], spans);
        }
    }
}

static RABBITMQCTL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"rabbitmqctl"));

/// The password of `rabbitmqctl add_user USER PW` and `rabbitmqctl
/// change_password USER PW`: the third word after the options. Each
/// command is read up to its line's or the command's end.
#[inline(never)]
fn rabbitmqctl_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    for (args, end) in command_args(s, &RABBITMQCTL, b"rabbitmqctl".len()) {
        let mut words = shell_words(s, args, end);
        let mut count = 0;
        while let Some((a, z)) = words.next() {
            let word = &s[a..z];
            if word.starts_with('-') {
                // The options that take a value.
                if matches!(word, "-n" | "--node" | "-t" | "--timeout" | "-p" | "--vhost" | "--erlang-cookie") {
                    words.next();
                }
                continue;
            }
            count += 1;
            if count == 1 && !matches!(word, "add_user" | "change_password") {
                break;
            }
            if count == 3 {
                push_word(a, word, spans);
                break;
            }
        }
    }
}

static RCLONE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"rclone"));
/// How many words before `config` an `rclone` command is read for it.
const RCLONE_REACH: usize = 4;

/// The secrets of `rclone config create NAME TYPE key value ...` and
/// `rclone config update NAME key value ...`: the words after the name (and
/// type) are pairs, and a value is masked when its key names a secret
/// (`secret_access_key`, `client_secret`, `token`). A `key=value` word is
/// a pair of its own, which the `key=value` scan reads.
#[inline(never)]
fn rclone_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    for (args, end) in command_args(s, &RCLONE, b"rclone".len()) {
        let mut words = shell_words(s, args, end).filter(|&(a, _)| !s[a..].starts_with('-'));
        // Global flags' values (`--config /path`) may stand before `config`.
        let Some(_) = words.by_ref().take(RCLONE_REACH).find(|&(a, z)| &s[a..z] == "config") else { continue };
        let skip = match words.next().map(|(a, z)| &s[a..z]) {
            Some("create") => 2,
            Some("update") => 1,
            _ => continue,
        };
        let mut words = words.skip(skip).filter(|&(a, z)| !s[a..z].contains('='));
        while let (Some((ka, kz)), Some((va, vz))) = (words.next(), words.next()) {
            if key_info(s[ka..kz].trim_matches(['"', '\''])).secret {
                push_word(va, &s[va..vz], spans);
            }
        }
    }
}

static MC_ALIAS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"alias"));

/// The secret key of the MinIO client's `mc alias set NAME URL ACCESS
/// SECRET` (`mcli` too, global flags before `alias`): the fourth word after
/// the options. With fewer words `mc` prompts for the keys. Looked for where
/// a URL woke the scan.
#[inline(never)]
fn mc_alias_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    const ALIAS: usize = b"alias".len();
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(off) = MC_ALIAS.find(&b[from..]) {
        let at = from + off;
        from = at + ALIAS;
        let rest = &s[at + ALIAS..];
        let gap = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        let verb_end = at + ALIAS + gap + b"set".len();
        if gap == 0
            || !rest[gap..].starts_with("set")
            || !matches!(b.get(verb_end), Some(b' ' | b'\t'))
            || !mc_before(s, at)
        {
            continue;
        }
        let end = s[at..].find(['\n', ';', '|', '&', '>', '<']).map_or(s.len(), |i| at + i);
        from = end;
        let mut words = shell_words(s, verb_end, end);
        let mut count = 0;
        while let Some((a, z)) = words.next() {
            let word = &s[a..z];
            if word.starts_with('-') {
                // `--api S3v4` and `--path auto` take a value.
                if matches!(word, "--api" | "--path") {
                    words.next();
                }
                continue;
            }
            count += 1;
            if count == 4 {
                push_word(a, word, spans);
                break;
            }
        }
    }
}

/// `s` split before its last word (after its last blank or line break).
fn split_last_word(s: &str) -> (&str, &str) {
    let len = s.bytes().rev().take_while(|c| !matches!(c, b' ' | b'\t' | b'\n')).count();
    s.split_at(s.len() - len)
}

/// Global flags read back from `alias` to the `mc` before them.
const MC_FLAGS_MAX: usize = 6;

/// Whether the word `alias` at `at` follows the `mc` or `mcli` command,
/// directly or after its global flags (`mc --insecure alias`, `mc -C dir alias`).
fn mc_before(s: &str, at: usize) -> bool {
    let mut head = s[..at].trim_end_matches([' ', '\t']);
    if head.len() == at {
        return false;
    }
    for _ in 0..=MC_FLAGS_MAX {
        let (before, word) = split_last_word(head);
        let name = word.strip_suffix("mcli").or_else(|| word.strip_suffix("mc"));
        if name.is_some_and(|n| n.is_empty() || n.ends_with(['/', '(', '`', '"', '\'', ';'])) {
            return true;
        }
        head = before.trim_end_matches([' ', '\t']);
        // A flag, or the value of one of the flags that take one.
        if !word.starts_with('-') {
            let (before, flag) = split_last_word(head);
            if !matches!(flag, "-C" | "--config-dir" | "--resolve" | "-H" | "--custom-header") {
                return false;
            }
            head = before.trim_end_matches([' ', '\t']);
        }
    }
    false
}

static SNMP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"snmp"));

/// The community string (`-c`) and the v3 passphrases (`-A`, `-X`) of an
/// SNMP command line (`snmpwalk`, `snmpget`, ...): each flag of the command, up to
/// its line's or the command's end.
#[inline(never)]
fn snmp_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(off) = SNMP.find(&b[from..]) {
        let at = from + off;
        // Another word holding `snmp` (`[snmp]`, `snmp-poll:`) leaves the
        // rest of its line to be looked at.
        from = at + 4;
        // A command name: at a word start, `snmp` and letters.
        let word_start = at == 0 || matches!(b[at - 1], b' ' | b'\t' | b'\n' | b'/' | b'(' | b'`' | b'"' | b'\'');
        if !word_start {
            continue;
        }
        let name_end = at + b[at..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
        if !matches!(b.get(name_end), Some(b' ' | b'\t')) {
            continue;
        }
        let end = s[at..].find(['\n', ';', '|', '&']).map_or(s.len(), |i| at + i);
        from = end;
        let mut words = shell_words(s, name_end, end);
        while let Some((a, z)) = words.next() {
            let flag = &s[a..z];
            if !matches!(flag.get(..2), Some("-c" | "-A" | "-X")) {
                continue;
            }
            if flag.len() > 2 {
                spans.push(unquote(a + 2, &s[a + 2..z])); // glued: `-cpublic`
            } else if let Some((va, vz)) = words.next().filter(|&(va, _)| !s[va..].starts_with('-')) {
                spans.push(unquote(va, &s[va..vz]));
            }
        }
    }
}

/// Commands that store a setting given as `<name> <value>`: `aws configure
/// set`, `npm config set` (`yarn`, `pnpm`), `dotnet user-secrets set`.
static CONFIG_SET: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        &r#"(?:^|[\s;&|(`"'])(?:aws[ \t]+configure|(?:npm|yarn|pnpm)[ \t]+config|npm|dotnet[ \t]+user-secrets)[ \t]+set[ \t]"#
            .replace(r"[ \t]", blank_class!()),
    )
    .ok()
});

/// The value of a setting command (see [`CONFIG_SET`]) whose name is
/// secret: `aws configure set aws_secret_access_key x --profile p`. The
/// words after `set` are read up to the line's or the command's end;
/// options (`--profile p`) are skipped, and the word after the first
/// secret name is its value.
fn config_set_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    let Some(re) = CONFIG_SET.as_ref() else { return };
    // The next command is looked for after the words already read, and a
    // command's end is found once for all the commands before it: a long
    // line of them stays linear.
    let mut from = 0;
    let mut end = 0;
    while let Some(m) = re.find_at(s, from) {
        if m.end() > end {
            end = s[m.end()..].find(['\n', ';', '|', '&']).map_or(s.len(), |i| m.end() + i);
        }
        from = end;
        let mut words = shell_words(s, m.end(), end);
        while let Some((a, z)) = words.next() {
            if s[a..].starts_with('-') {
                continue;
            }
            from = z;
            if !key_info(s[a..z].trim_matches(['"', '\''])).secret {
                continue;
            }
            if let Some((va, vz)) = words.next().filter(|&(va, _)| !s[va..].starts_with('-')) {
                from = vz;
                push_word(va, &s[va..vz], spans);
            }
            break;
        }
    }
}

/// The words of `s[from..to]`, split at blanks; a word opening with a quote
/// runs to its closing quote.
fn shell_words(s: &str, from: usize, to: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let b = s.as_bytes();
    let mut i = from;
    std::iter::from_fn(move || {
        while i < to && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i >= to {
            return None;
        }
        let start = i;
        if let q @ (b'"' | b'\'') = b[i] {
            i = b[i + 1..to].iter().position(|&c| c == q).map_or(to, |n| i + 1 + n + 1);
        } else {
            while i < to && !matches!(b[i], b' ' | b'\t') {
                i += 1;
            }
        }
        Some((start, i))
    })
}

/// Base64 of a JSON object (`eyJ…`: a `.dockerconfigjson`, a session
/// cookie, a service-account file) or of a PEM block is masked whole when
/// its decoded text holds a secret; otherwise it stays (most are harmless:
/// `{"user_id": 42}`, a certificate).
fn base64_json_spans(s: &str, sh: &Shapes, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    for m in sh.base64_json.find_iter(s) {
        let Some(decoded) = decode_base64(m.as_str()) else { continue };
        let Ok(text) = std::str::from_utf8(&decoded) else { continue };
        let mut inner = Vec::new();
        scan(text, key_info, &mut inner, false);
        if !inner.is_empty() {
            spans.push((m.start(), m.end()));
        }
    }
}

/// Longer than any hint: how far past a token match the next one's prefix may reach.
const MAX_HINT: usize = 32;

/// Token matches. A token glued right after another (`ghp_…ghp_…`) has
/// its prefix eaten by the first match, whose characters it shares: a
/// token start inside a match ends that match there, and the search goes
/// on from it.
fn token_spans(s: &str, sh: &Shapes, spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    let mut glued = 0;
    while let Some(m) = sh.tokens.find_at(s, from) {
        if !is_token(m.as_str()) {
            // Every token pattern starts with an ASCII character.
            from = m.start() + 1;
            continue;
        }
        if glued >= MAX_GLUED {
            // Each split searches the rest of the run again (`sk-sk-sk-…`:
            // quadratic). Past a few, the run is masked whole, to the next
            // space: more than its tokens, never less.
            let end = s[m.end()..].find(char::is_whitespace).map_or(s.len(), |n| m.end() + n);
            spans.push((m.start(), end));
            from = end;
            glued = 0;
            continue;
        }
        // The next token's prefix may run past this match (`ghp` inside, `_` after it).
        let mut window = (m.end() + MAX_HINT).min(s.len());
        while !s.is_char_boundary(window) {
            window -= 1;
        }
        // Every token pattern starts with an ASCII character: `start + 1` is a char boundary.
        let inner = sh
            .hints
            .find_overlapping_iter(&s[m.start() + 1..window])
            .map(|hint| m.start() + 1 + hint.start())
            .filter(|&at| at < m.end())
            .find(|&at| token_starts_at(s, sh, at));
        glued = if inner.is_some() { glued + 1 } else { 0 };
        let end = inner.unwrap_or(m.end());
        spans.push((m.start(), end));
        from = end;
    }
}

/// Tokens glued one after another that are masked one by one; the rest of
/// such a run is masked whole (see [`token_spans`]).
const MAX_GLUED: usize = 16;

/// Longer than the shortest form of any token pattern (the longest, a
/// Terraform `….atlasv1.…`, needs 83 bytes; `gh?_` tokens end by 259).
const TOKEN_PROBE: usize = 512;

/// Whether a token match starts exactly at `at`. A search over the whole
/// rest of the text would cost its length at each hint inside a long token
/// (`glpat-asiaasia…`: quadratic), so a bounded window is searched first:
/// every token starting at `at` has a form within it that matches there
/// too. The window can also accept where the text does not (a trailing
/// word boundary at its cut), so a hit is confirmed on the whole text,
/// whose search then stops at that match.
fn token_starts_at(s: &str, sh: &Shapes, at: usize) -> bool {
    let mut end = at.saturating_add(TOKEN_PROBE).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    sh.tokens.find_at(&s[..end], at).is_some_and(|m| m.start() == at && is_token(m.as_str()))
        && sh.tokens.find_at(s, at).is_some_and(|m| m.start() == at && is_token(m.as_str()))
}

/// Whether a match of the token patterns is a token. A Mailgun key is
/// base 36: `key-` and 32 hex digits is a cache key holding an MD5 digest.
fn is_token(m: &str) -> bool {
    !m.strip_prefix("key-").is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_hexdigit()))
        // A Netlify token is random base 62; `nfp_` and a long snake_case
        // name without a digit is an identifier.
        && m.strip_prefix("nfp_").is_none_or(|rest| rest.bytes().any(|b| b.is_ascii_digit()))
}

/// Replaces each span by `mask`; `None` when nothing changes. Spans that
/// already start with the mask are left alone, which makes redaction
/// idempotent even for a mask with spaces or punctuation in it.
pub fn apply(s: &str, spans: &mut Vec<(usize, usize)>, mask: &str) -> Option<String> {
    spans.retain(|&(a, b)| a < b && b <= s.len() && !s[a..].starts_with(mask));
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    let mut i = 0;
    while i < spans.len() {
        let (start, mut end) = spans[i];
        i += 1;
        while i < spans.len() && spans[i].0 < end {
            end = end.max(spans[i].1);
            i += 1;
        }
        let start = start.max(pos);
        out.push_str(&s[pos..start]);
        out.push_str(mask);
        pos = end.max(start);
    }
    out.push_str(&s[pos..]);
    (out != s).then_some(out)
}

/// Searchers for the fixed strings the hand-written scanners look for,
/// built once: building one costs more than most of their searches.
static SLASHES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"//"));
static CLOSE_TAG: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"</"));

/// Passwords in URL authorities, `//user:password@host`: what the regex
/// `//[^\s/?#:"'<>\x60]*:[^\s/?"'<>\x60]+@` finds, scanned by hand (the
/// regex was most of the cost of a value holding a URL). The password runs
/// to the *last* `@` of the authority, so `p@ss` and `p:w` stay inside it;
/// quotes and `<>` end it (URLs in HTML).
fn url_passwords(s: &str, spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(off) = SLASHES.find(&s.as_bytes()[from..]) {
        let start = from + off;
        match url_password_at(s, start + 2) {
            Some((pass, at)) => {
                spans.push((pass, at));
                from = at + 1;
            }
            None => from = start + 1,
        }
    }
}

/// The password span of an authority starting at `user` (just after `//`).
fn url_password_at(s: &str, user: usize) -> Option<(usize, usize)> {
    let stop = |c: char| c.is_whitespace() || matches!(c, '/' | '?' | '"' | '\'' | '<' | '>' | '`');
    let (offset, _) = s[user..].char_indices().find(|&(_, c)| c == ':' || c == '#' || stop(c))?;
    let colon = user + offset;
    if s.as_bytes()[colon] != b':' {
        return None;
    }
    let pass = colon + 1;
    let mut last_at = None;
    for (i, c) in s[pass..].char_indices() {
        if stop(c) {
            break;
        }
        if c == '@' && i > 0 {
            last_at = Some(pass + i);
        }
    }
    last_at.map(|at| (pass, at))
}

fn push_group(c: &regex::Captures<'_>, name: &str, spans: &mut Vec<(usize, usize)>) {
    if let Some(m) = c.name(name) {
        spans.push((m.start(), m.end()));
    }
}

/// A word that holds a secret (a command's argument, a captured value):
/// its span without its quotes, unless its value is one to keep readable.
fn push_word(start: usize, word: &str, spans: &mut Vec<(usize, usize)>) {
    if !keep_value(word.trim_matches(['"', '\''])) {
        spans.push(unquote(start, word));
    }
}

/// The span of a value without its surrounding quotes.
fn unquote(start: usize, v: &str) -> (usize, usize) {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        (start + 1, start + v.len() - 1)
    } else {
        (start, start + v.len())
    }
}

/// The body of each private-key block (BEGIN line and END line kept); a
/// block cut off before its END line is masked to the end of the text.
fn pem_spans(s: &str, sh: &Shapes, spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(m) = sh.pem_begin.find_at(s, from) {
        let body_start = m.end();
        let end_line = if m.as_str().starts_with("---- ") { "---- END" } else { "-----END" };
        let (body_end, next) = match s[body_start..].find(end_line) {
            Some(i) => (body_start + i, body_start + i + end_line.len()),
            None => (s.len(), s.len()),
        };
        push_trimmed(s, body_start, body_end, spans);
        from = next;
        if from >= s.len() {
            break;
        }
    }
    // PuTTY key files: everything after the header line (one rule, so a
    // second pass finds the same span, already masked).
    if let Some(at) = find_ascii_ci(s, "putty-user-key-file") {
        if let Some(nl) = s[at..].find('\n') {
            push_trimmed(s, at + nl + 1, s.len(), spans);
        }
    }
}

fn push_trimmed(s: &str, start: usize, end: usize, spans: &mut Vec<(usize, usize)>) {
    let body = &s[start..end];
    let lead = body.len() - body.trim_start().len();
    let trail = body.len() - body.trim_end().len();
    if lead + trail < body.len() {
        spans.push((start + lead, end - trail));
    }
}

fn find_ascii_ci(s: &str, needle: &str) -> Option<usize> {
    let n = needle.len();
    s.as_bytes().windows(n).position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether what follows an auth scheme word is a credential rather than
/// prose (`Bearer token expired`, `basic authentication`).
fn credential_like(scheme: &str, cred: &str) -> bool {
    // A challenge's parameter (`WWW-Authenticate: Bearer realm="api"`).
    if let Some(name) = cred.strip_suffix('=') {
        if ["realm", "scope", "error", "charset", "nonce", "opaque", "qop", "algorithm", "stale", "domain"]
            .iter()
            .any(|p| name.eq_ignore_ascii_case(p))
        {
            return false;
        }
    }
    let has_digit = cred.bytes().any(|b| b.is_ascii_digit());
    let has_punct = cred.bytes().any(|b| b"-._~+/=".contains(&b));
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => cred.len() >= 20 || (cred.len() >= 6 && (has_digit || has_punct)),
        "basic" => basic_userpass(cred) || (cred.len() >= 8 && has_digit),
        _ => cred.len() >= 16 && has_digit,
    }
}

/// Whether `cred` is base64 of `user:password`.
fn basic_userpass(cred: &str) -> bool {
    decode_base64(cred).is_some_and(|d| d.contains(&b':') && d.iter().all(|&b| b >= 0x20 || b == b'\t'))
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Scheme words after which a header value's credential follows.
fn is_scheme_word(v: &str) -> bool {
    ["bearer", "basic", "token", "digest", "negotiate", "apikey", "api-key", "ntlm"]
        .iter()
        .any(|w| v.eq_ignore_ascii_case(w))
}

/// Values that are not secrets even under a secret name: placeholders a
/// reader needs to see (`${DB_PASSWORD}`), and null/boolean words.
pub(super) fn keep_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    // A value cut at a blank keeps the punctuation after it (`NULL,` in an
    // SQL `SET` list, `YES)` in MySQL's "(using password: YES)").
    let word = v.trim_end_matches([',', ';', ')']);
    // One lowercase copy: ASCII lowercasing keeps byte lengths, so `word`'s is a prefix of it.
    let full = v.to_ascii_lowercase();
    let lower = &full[..word.len()];
    if matches!(lower, "true" | "false" | "null" | "none" | "undefined" | "nil" | "yes" | "no") {
        return true;
    }
    // A value already masked by whoever wrote the text (`password: ********`).
    if word.len() >= 3 && word.bytes().all(|c| c == b'*') {
        return true;
    }
    if sql_placeholder(word) {
        return true;
    }
    // Status words and placeholders a settings dump shows in place of a
    // value (`password: (not set)`, `[hidden]`), GitHub's `permissions:`
    // (`id-token: write`), feature switches (`mfa: enabled`), and references to where a secret lives:
    // `${{ secrets.NPM_TOKEN }}` (cut at its first blank), CloudFormation's
    // `!Ref DbPassword`, OpenSSL's `-pass file:/path` / `env:NAME` / `fd:3`.
    let inner = [('(', ')'), ('[', ']'), ('<', '>')]
        .iter()
        .find_map(|&(open, close)| full.strip_prefix(open).and_then(|r| r.strip_suffix(close)))
        .unwrap_or(lower);
    if matches!(
        inner,
        "not set" | "unset" | "hidden" | "redacted" | "masked" | "filtered" | "empty" | "required" | "optional"
    ) || matches!(lower, "read" | "write" | "enabled" | "disabled")
    {
        return true;
    }
    if word == "${{" || matches!(word, "!Ref" | "!GetAtt" | "!ImportValue") {
        return true;
    }
    if let Some((scheme, rest)) = word.split_once(':') {
        let fd = scheme == "fd" && !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_digit());
        let env = scheme == "env" && env_like(rest);
        let file = scheme == "file" && (rest.starts_with('/') || rest.starts_with("~/") || rest.starts_with("./"));
        if fd || env || file {
            return true;
        }
    }
    let b = v.as_bytes();
    let env_name =
        |t: &[u8]| !t.is_empty() && t.iter().all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
    (v.starts_with("${") && v.ends_with('}') && !v[2..].contains('{'))
        || (v.starts_with("{{") && v.ends_with("}}"))
        || (b[0] == b'$' && env_name(&b[1..]))
        || (b.len() > 2 && b[0] == b'%' && b[b.len() - 1] == b'%' && env_name(&b[1..b.len() - 1]))
}

/// A shell redirection standing where a flag's value would (`gh auth login
/// --with-token < token.txt`): the value comes from a file. A here-string's
/// `<<<` is not one: the value follows it.
pub(super) fn shell_operator(v: &str) -> bool {
    !v.is_empty() && v != "<<<" && v.bytes().all(|c| matches!(c, b'<' | b'>' | b'|' | b'&' | b';'))
}

/// A DB-API parameter placeholder standing for a value in an SQL statement
/// (`SET password = %s`, `?`, `:pw`, `:1`, `%(pw)s`; `$1` is an env name's
/// shape): the statement's text, not a secret.
fn sql_placeholder(w: &str) -> bool {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    matches!(w, "?" | "%s")
        || w.strip_prefix(':').is_some_and(|t| env_like(t) || digits(t))
        || w.strip_prefix("%(").and_then(|t| t.strip_suffix(")s")).is_some_and(env_like)
}

/// An environment variable's name (`DB_PASS`, `db_pass`).
fn env_like(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') && !t.as_bytes()[0].is_ascii_digit()
}

/// A character that can be part of a key in `key=value` text; the
/// fullwidth `＿`, `－`, `．` of CJK text too (the key rules fold them).
fn key_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(c, '_' | '.' | '-' | '[' | ']')
        || (!c.is_ascii() && (is_format_char(c) || matches!(c, '\u{FF3F}' | '\u{FF0D}' | '\u{FF0E}')))
}

fn is_format_char(c: char) -> bool {
    matches!(c, '\u{AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

/// `key` `=` `value` pairs, parsed by hand in one pass: each separator
/// (`=`, `:`, `:=`, `=>`, `==`) looks back for its key, which the key rules
/// judge; only then is the value after it delimited. Backward scans stop at
/// the previous separator, so the whole pass is linear.
///
/// The sibling rule holds in text too: the last name field seen
/// (`key=db.password`, `"name": "api_key"`) decides whether the value
/// fields after it (`new_value=`, `"value":`) are secret. It covers what is
/// not one JSON document: JSON after a prefix, JSON lines, JSON over the
/// parse cap, the str() of a record object.
fn kv_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    let mut at = 0;
    let mut key_floor = 0;
    let mut named_secret = false;
    // Whether the text holds a JSON Web Key's `kty` member; looked for only
    // once a one-letter member such as `"d"` is met.
    let mut jwk: Option<bool> = None;
    // The end of the last `net use` line read: another `/user:` on it adds nothing.
    let mut net_use_done = 0;
    // The last URL read for an OAuth `state` (see [`query_credential`]).
    let mut url_word = UrlWord::default();
    while let Some(off) = memchr::memchr3(b'=', b':', FULLWIDTH_LEAD, &b[at..]) {
        let sep = at + off;
        // The separator as ASCII, and whether it is a lone `:` (a YAML key, a header).
        let (sep_char, sep_end, lone_colon) = match (b[sep], b.get(sep + 1)) {
            (b':', Some(b'=')) => (b':', sep + 2, false),
            (b'=', Some(b'>' | b'=')) => (b'=', sep + 2, false),
            (FULLWIDTH_LEAD, _) => match fullwidth_sep(b, sep) {
                Some(c) => (c, sep + 3, c == b':'),
                None => {
                    at = sep + 1;
                    continue;
                }
            },
            (c, _) => (c, sep + 1, c == b':'),
        };
        at = sep_end;
        let port =
            if sep_char == b':' && sep_end == sep + 1 && host_end(b, sep) { port_field(b, sep_end) } else { None };
        if let Some(port) = port {
            if let Some((start, end)) = pgpass_password(s, sep, port) {
                spans.push((start, end));
                at = end;
                key_floor = at;
                continue;
            }
        }
        let Some(key) = key_before(s, key_floor, sep) else { continue };
        let floor = key_floor;
        key_floor = sep_end;
        if sep_char == b':'
            && matches!(key.len(), 1 | 4)
            && (key.eq_ignore_ascii_case("user") || key.eq_ignore_ascii_case("u"))
        {
            let key_at = key.as_ptr() as usize - s.as_ptr() as usize;
            if key_at > 0 && b[key_at - 1] == b'/' && key_at >= net_use_done {
                // `net use \\host\share pw /user:name`: the password has no key.
                net_use_done = net_use_spans(s, key_at, spans);
            }
        }
        if key == "arn" && sep_char == b':' && s[sep_end..].starts_with("aws") {
            // An AWS ARN names a resource (`arn:aws:secretsmanager:…:secret:prod/db`);
            // its `:`-separated fields are no pairs.
            at = s[sep_end..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ']' | '}' | '>' | '<'))
                .map_or(s.len(), |i| sep_end + i);
            key_floor = at;
            continue;
        }
        if sep_char == b':' && matches!(key.len(), 3 | 4) && oracle_driver(s, key) {
            // `jdbc:oracle:thin:user/password@host`: the password has no key.
            if let Some((start, end)) = oracle_password(s, sep_end) {
                spans.push((start, end));
                at = end;
                key_floor = at;
            }
            continue;
        }
        if not_a_secret_pair(key, sep_char, &s[sep_end..]) {
            continue;
        }
        let mut info = key_info(key);
        if !info.secret && sep_char == b'=' {
            if key == "string" {
                // Go's `var password string = "x"`: the name before the type says.
                info.secret = go_declared_secret(s, floor, key, key_info);
            } else if matches!(key, "code" | "key") {
                info.secret = query_credential(s, key, sep_end, &mut url_word);
            }
        }
        if info.name_field && !info.secret {
            named_secret = name_after(s, sep_end).is_some_and(|name| key_info(name).secret);
            continue;
        }
        let jwk_member = info.jwk_private && !info.secret && *jwk.get_or_insert_with(|| has_kty_member(s));
        if !(info.secret || (info.value_field && named_secret) || jwk_member) {
            continue;
        }
        if lone_colon {
            if let Some((start, end)) = yaml_block(s, key, sep_end) {
                if !keep_value(&s[start..end]) {
                    spans.push((start, end));
                }
                at = end;
                key_floor = at;
                continue;
            }
        }
        if let Some((start, end)) = heredoc(s, sep_end) {
            spans.push((start, end));
            at = end;
            key_floor = at;
            continue;
        }
        let Some((v_start, v_end, quoted)) = value_after(s, sep_end) else {
            // Rust's `const PASSWORD: &str = "x"`: a reference type, then the value.
            if let Some((start, end)) = lone_colon.then(|| reference_typed_default(s, sep_end)).flatten() {
                if !keep_value(&s[start..end]) {
                    spans.push((start, end));
                }
                at = at.max(end);
                key_floor = at;
            }
            continue;
        };
        let value = &s[v_start..v_end];
        if lone_colon && !quoted {
            // A typed declaration, `password: str = "x"` (Python,
            // TypeScript, Kotlin): the word after the `:` is its type, masked
            // below as the value; the value after the `=` goes too.
            if let Some((start, end)) = typed_default(s, v_end) {
                if !keep_value(&s[start..end]) {
                    spans.push((start, end));
                }
                at = at.max(end);
            }
        }
        let auth_header = !quoted && authorization_key(key);
        if auth_header && value.contains('=') {
            // `Authorization: key=...`, `Credential=..., Signature=...`: every
            // parameter of an authorization header is part of the credential.
            let end = auth_params_end(s, v_start);
            spans.push((v_start, end));
            at = at.max(end);
            key_floor = at;
            continue;
        }
        if !quoted && lone_colon && set_cookie_key(key) {
            // `Set-Cookie: id=...; Path=/`: one cookie per header, its
            // value a credential whatever its name; the attributes stay.
            if let Some(eq) = value.find('=') {
                if v_start + eq + 1 < v_end && !keep_value(&value[eq + 1..]) {
                    spans.push((v_start + eq + 1, v_end));
                }
                at = at.max(v_end);
                key_floor = at;
                continue;
            }
        }
        if !quoted && lone_colon && value.trim_end_matches('=').contains('=') {
            // `Cookie: sid=..; theme=dark`: judge each pair by its own name.
            // Trailing `=` is base64 padding (`password: aHVudGVyMg==`), no pair.
            continue;
        }
        if !quoted && (is_scheme_word(value) || (auth_header && vendor_scheme(s, value, v_end))) {
            // `Authorization: Bearer x`, `Authorization: SSWS x`, `Digest
            // username="u", response="..."`: keep the scheme, mask the credential.
            let rest = &s[v_end..];
            let skip = rest.len() - rest.trim_start_matches(is_value_blank).len();
            let cred_start = v_end + skip;
            let cred_end = auth_params_end(s, cred_start);
            // `Authorization: Bearer token required`: the word `token` (or a
            // placeholder) names what is missing, it is none.
            let cred = &s[cred_start..cred_end];
            if cred_end > cred_start && skip > 0 && !keep_value(cred) && !cred.eq_ignore_ascii_case("token") {
                spans.push((cred_start, cred_end));
            }
            at = at.max(cred_end);
            key_floor = at;
            continue;
        }
        let mut v_end = v_end;
        if !keep_value(value) {
            if auth_header {
                // A first word with a digit is no scheme the rules know
                // (`FlyV1 fm2_...`, `TC3-HMAC-SHA256 Credential=...`): it may be
                // the credential or a scheme before it, so both go.
                v_end = header_rest_end(s, v_end).unwrap_or(v_end);
            }
            spans.push((v_start, v_end));
        }
        at = at.max(v_end);
        key_floor = at;
    }
}

/// The value of `= value` right after a typed declaration's type ending at
/// `type_end`; not `==` or `=>`. Out of line: it is rare, and the pair
/// scan it is called from runs on most text.
#[inline(never)]
fn typed_default(s: &str, type_end: usize) -> Option<(usize, usize)> {
    let rest = &s[type_end..];
    let eq = type_end + (rest.len() - trim_blanks_start(rest).len());
    let b = s.as_bytes();
    if b.get(eq) != Some(&b'=') || matches!(b.get(eq + 1), Some(b'=' | b'>')) {
        return None;
    }
    value_after(s, eq + 1).map(|(start, end, _)| (start, end))
}

/// Longest reference type read before a declaration's value (`&'static [u8]`).
const REFERENCE_TYPE_MAX: usize = 48;

/// The value of a Rust declaration whose type is a reference, `: &str =
/// "x"`, `: &'static [u8] = b"x"`, after the colon at `from`; the type stays
/// readable. Out of line, like [`typed_default`].
#[inline(never)]
fn reference_typed_default(s: &str, from: usize) -> Option<(usize, usize)> {
    let rest = trim_blanks_start(&s[from..]);
    let ty = rest.strip_prefix('&')?;
    let b = ty.as_bytes();
    // A lifetime and `mut` before the type's name (`&'static str`).
    let mut i = 0;
    if b.first() == Some(&b'\'') {
        i = 1 + b[1..].iter().take(REFERENCE_TYPE_MAX).take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
        i += b[i..].iter().take_while(|&&c| c == b' ').count();
    }
    if ty[i..].starts_with("mut ") {
        i += 4;
    }
    let name = b[i..]
        .iter()
        .take(REFERENCE_TYPE_MAX)
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'[' | b']' | b';' | b' ' | b':'))
        .count();
    // Trailing blanks before the `=` belong to `typed_default`.
    let name = ty[i..i + name].trim_end_matches(' ').len();
    if name == 0 {
        return None;
    }
    let type_end = s.len() - ty.len() + i + name;
    typed_default(s, type_end)
}

/// A URL (a run of text with no blank or quote) read once for all the
/// query parameters in it: its span and whether its query holds a `state`.
#[derive(Default)]
struct UrlWord {
    start: usize,
    end: usize,
    oauth_state: bool,
}

/// Shortest value taken for a credential by its place in a URL query.
const QUERY_CREDENTIAL_MIN: usize = 16;

/// Whether the parameter `key` (`code` or `key`, a slice of `s`) of a URL
/// query, its value at `value_at`, holds a credential though its name is
/// generic: an OAuth callback's `code` (its query or fragment also holds
/// `state`: `?code=...&state=...`), an API key given as `?key=...`. Both
/// need a value of 16 letters, digits and `-_./%` or more (Google's codes
/// are percent-encoded, `4%2F0A...`); for `key`, one with a digit and no
/// `/`, `.` or `%` (a path, a file name): `?code=404`,
/// `?code=US&state=NY`, `?key=user:42` and `?key=reports/q1.csv` stay readable.
#[inline(never)]
fn query_credential(s: &str, key: &str, value_at: usize, url: &mut UrlWord) -> bool {
    let b = s.as_bytes();
    let key_at = key.as_ptr() as usize - s.as_ptr() as usize;
    if key_at == 0 || !matches!(b[key_at - 1], b'?' | b'&' | b'#') {
        return false;
    }
    let value_len = b[value_at..]
        .iter()
        .take_while(|&&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/' | b'%'))
        .count();
    if value_len < QUERY_CREDENTIAL_MIN
        || b.get(value_at + value_len).is_some_and(|&c| !(c == b'&' || c == b'#' || c == b';' || url_stop(c)))
    {
        return false;
    }
    let value = &b[value_at..value_at + value_len];
    if key == "key" {
        return value.iter().any(u8::is_ascii_digit) && !value.iter().any(|c| matches!(c, b'/' | b'.' | b'%'));
    }
    if !(url.start <= key_at && key_at < url.end) {
        // Each URL is read once, however many parameters it has.
        let start = b[..key_at].iter().rposition(|&c| url_stop(c)).map_or(0, |i| i + 1);
        let end = b[key_at..].iter().position(|&c| url_stop(c)).map_or(b.len(), |i| key_at + i);
        let word = &b[start..end];
        let oauth_state = memchr::memmem::find_iter(word, b"state=")
            .any(|i| i > 0 && matches!(word[i - 1], b'?' | b'&' | b'#'))
            && memchr::memchr2(b'?', b'#', word).is_some();
        *url = UrlWord { start, end, oauth_state };
    }
    url.oauth_state
}

/// A byte that ends a URL in text: a blank or a quote.
fn url_stop(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'<' | b'>' | b'`')
}

/// Whether the Go declaration whose type `ty` (a slice of `s`) is read, `var
/// password string =` (`const` too, or a line of a `var (` block), names a
/// secret. The name is read back to `floor` at most, so the scan stays linear.
#[inline(never)]
fn go_declared_secret(s: &str, floor: usize, ty: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo) -> bool {
    let ty_at = ty.as_ptr() as usize - s.as_ptr() as usize;
    let head = &s[floor..ty_at];
    let name_end = head.trim_end_matches([' ', '\t']);
    let name_len = name_end.bytes().rev().take_while(|&c| c.is_ascii_alphanumeric() || c == b'_').count();
    if name_end.len() == head.len() || name_len == 0 || name_len > CALL_NAME_MAX || name_len == name_end.len() {
        return false;
    }
    let before = &name_end[..name_end.len() - name_len];
    let spaced = before.trim_end_matches([' ', '\t']);
    // `var` or `const` as a word before the name, or a line's indentation (a block).
    let declared = spaced.len() < before.len()
        && ["var", "const"].iter().any(|w| {
            spaced.strip_suffix(w).is_some_and(|b| b.is_empty() || b.ends_with(|c: char| c.is_whitespace() || c == ';'))
        });
    let in_block = spaced.ends_with('\n') && before.len() > spaced.len();
    (declared || in_block) && key_info(&name_end[name_end.len() - name_len..]).secret
}

/// The end of what follows an authorization header's first word ending at
/// `v_end` on its line, if anything does.
fn header_rest_end(s: &str, v_end: usize) -> Option<usize> {
    let rest = &s[v_end..];
    let after = trim_blanks_start(rest);
    (after.len() < rest.len() && after.starts_with(|c: char| !c.is_whitespace()))
        .then(|| auth_params_end(s, s.len() - after.len()))
}

/// Whether `s` holds a `kty` key (`"kty": "RSA"`, `\"kty\":`, `kty: EC`):
/// the one-letter members around it are a JSON Web Key's.
#[inline(never)]
fn has_kty_member(s: &str) -> bool {
    let b = s.as_bytes();
    memchr::memmem::find_iter(b, b"kty").any(|at| {
        let word_start = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
        let rest = &b[at + 3..];
        let skip = rest.iter().take_while(|&&c| matches!(c, b'"' | b'\\' | b'\'' | b' ' | b'\t')).count();
        word_start && rest.get(skip) == Some(&b':')
    })
}

/// The password of a `.pgpass` line, `host:port:database:user:password`,
/// whose first `:` is at `sep` and port field `port` bytes long (see
/// [`port_field`]): the host a name, an address or `*`, the
/// port digits or `*`, database and user one word each; the password runs
/// to the line's end. Times (`12:30:01`), compiler messages (`main.c:12:5:
/// error`) and `/etc/passwd` lines (`root:x:0:0:...`) have no such shape.
#[inline(never)]
fn pgpass_password(s: &str, sep: usize, port: usize) -> Option<(usize, usize)> {
    let b = s.as_bytes();
    // The fields after the host first: they rule out most texts at once.
    let mut i = sep + 1 + port + 1;
    for _ in 0..2 {
        let field = b[i..].iter().take_while(|&&c| !c.is_ascii_whitespace() && c != b':').count();
        if field == 0 || b.get(i + field) != Some(&b':') {
            return None;
        }
        i += field + 1;
    }
    if b.get(i).is_none_or(u8::is_ascii_whitespace) {
        return None;
    }
    // A host name has at most 253 bytes: the look back is bounded. It comes
    // before the look ahead to the line's end, which a match then skips, so
    // text made of `a:1:b:c:` is scanned in linear time.
    let floor = sep.saturating_sub(HOST_MAX);
    let host_start = match b[floor..sep].iter().rposition(|c| c.is_ascii_whitespace()) {
        Some(i) => floor + i + 1,
        None if floor == 0 => 0,
        None => return None,
    };
    let host = &b[host_start..sep];
    let name = !host.is_empty()
        && host.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        && host.iter().any(|&c| c.is_ascii_alphabetic() || c == b'.')
        // An ISO time's `2024-05-01T12` is no host.
        && !(host.len() == 13 && host[10] == b'T' && host[..4].iter().all(u8::is_ascii_digit));
    if !(host == b"*" || name) || source_file(&s[host_start..sep]) {
        return None;
    }
    let end = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n);
    Some((i, i + s[i..end].trim_end().len()))
}

/// Whether the byte before the `:` at `sep` may end a `.pgpass` host (a
/// name or `*`): one compare rules out a JSON key's `":`.
#[inline(always)]
fn host_end(b: &[u8], sep: usize) -> bool {
    sep > 0 && matches!(b[sep - 1], b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'.' | b'-' | b'_')
}

/// The length of the `.pgpass` port field (1 to 5 digits or `*`, then
/// `:`) starting at `at`, if one does: checked at each `:` before the rest
/// of the line is looked at (`db:5432/main` has none).
#[inline(always)]
fn port_field(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    while i < b.len() && i < at + 5 && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == at && b.get(at) == Some(&b'*') {
        i += 1;
    }
    (i > at && b.get(i) == Some(&b':')).then_some(i - at)
}

/// Longest host looked back for before a `.pgpass` line's port.
const HOST_MAX: usize = 256;

/// How far around a `net use` line's `/user:` the command is looked for.
const NET_USE_REACH: usize = 1024;

/// Whether `name` is a source file's (`TokenService.java`): before a `:`
/// and a number it is a stack frame, not a key or a host.
fn source_file(name: &str) -> bool {
    const SOURCE: &[&str] =
        &["java", "kt", "scala", "go", "rs", "py", "js", "ts", "rb", "php", "cs", "c", "cc", "cpp", "h", "swift"];
    name.rsplit_once('.').is_some_and(|(_, ext)| SOURCE.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

/// The passwords of a `net use` command line holding `/user:` at `user_at`
/// (the `u`): every word after `net use` that is no device (`Z:`), share
/// (`\\host\share`), switch (`/user:x`, `/persistent:no`) or prompt (`*`).
/// Returns where the line read ends.
#[inline(never)]
fn net_use_spans(s: &str, user_at: usize, spans: &mut Vec<(usize, usize)>) -> usize {
    let b = s.as_bytes();
    // Bounded both ways, so a text full of `/u:` is scanned in linear time.
    let mut floor = user_at.saturating_sub(NET_USE_REACH);
    while !s.is_char_boundary(floor) {
        floor += 1;
    }
    let mut ceiling = (user_at + NET_USE_REACH).min(b.len());
    while !s.is_char_boundary(ceiling) {
        ceiling -= 1;
    }
    let line_start = memchr::memrchr(b'\n', &b[floor..user_at]).map_or(floor, |i| floor + i + 1);
    let line_end = memchr::memchr(b'\n', &b[user_at..ceiling]).map_or(ceiling, |i| user_at + i);
    let Some(cmd) = find_ascii_ci(&s[line_start..user_at], "net use ") else { return line_end };
    let mut at = line_start + cmd + "net use ".len();
    for word in s[at..line_end].split_ascii_whitespace() {
        let start = at + s[at..line_end].find(word).unwrap_or(0);
        at = start + word.len();
        let w = word.trim_matches('"');
        let device = w.len() == 2 && w.as_bytes()[0].is_ascii_alphabetic() && w.ends_with(':');
        if w.is_empty() || w == "*" || device || w.starts_with(['\\', '/']) || keep_value(w) {
            continue;
        }
        spans.push(unquote(start, word));
    }
    line_end
}

/// Words that say what happened to a secret, not what it is (`db.password changed`).
/// Whether `word` is one of [`STATUS_WORDS`].
fn status_word(word: &str) -> bool {
    STATUS_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w))
}

const STATUS_WORDS: &[&str] = &[
    "failed",
    "ok",
    "denied",
    "error",
    "succeeded",
    "successful",
    "expired",
    "invalid",
    "missing",
    "rejected",
    "changed",
    "updated",
    "reset",
    "rotated",
    "set",
    "cleared",
    "removed",
    "deleted",
    "created",
    "saved",
    "loaded",
    "accepted",
    "valid",
    "wrong",
    "incorrect",
    "mismatch",
    "blank",
];

/// A `.properties` line with a blank for its separator, `db.password pw`:
/// a line of two words whose first is a dotted or underscored secret name
/// (`spring.datasource.password`, `DB_PASSWORD`). A lone word such as
/// `password` before another is prose too often (`password reset`), and
/// so is a status word after the name (`db.password changed`); a quoted
/// value ending the line is not (see [`quoted_tail`]).
#[inline(never)]
fn blank_pair_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    let mut start = 0;
    for line in s.split('\n') {
        let at = start;
        start += line.len() + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((v_start, v_end)) = quoted_tail(line, key_info) {
            spans.push((at + v_start, at + v_end));
            continue;
        }
        let body = line.trim_start_matches([' ', '\t']);
        let Some((key, value)) = body.split_once([' ', '\t']) else { continue };
        let value = value.trim_matches([' ', '\t']);
        let compound = key.contains(['.', '_']) && !key.starts_with(['.', '_']) && !key.ends_with(['.', '_']);
        if !compound
            || value.is_empty()
            || value.contains([' ', '\t'])
            || !key.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
            || STATUS_WORDS.iter().any(|w| value.trim_end_matches(['.', '!']).eq_ignore_ascii_case(w))
            || keep_value(value)
            || !key_info(key).secret
        {
            continue;
        }
        let v_end = at + line.trim_end_matches([' ', '\t']).len();
        spans.push((v_end - value.len(), v_end));
    }
}

/// The quoted value that ends a line after a secret name and a blank in a
/// config statement, `password "pw"` (Juniper's `secret "pw";`, `set
/// password "pw"`, `username u password "pw"`), or after R's `<-`
/// (`password <- "pw"`): its span in `line`. A quoted word inside a
/// sentence (`the password "policy" was changed`) does not end its line,
/// and in a log line ending so (`Unexpected token '<'`, `created secret
/// "app-tls"`, the secret's name) the name is not the statement's first
/// word; a status word (`token "expired"`) is no value, as on a `.properties` line.
fn quoted_tail(line: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo) -> Option<(usize, usize)> {
    let body = before_comment(line.trim_end_matches([' ', '\t', ';']));
    let q = *body.as_bytes().last().filter(|&&c| c == b'"' || c == b'\'')?;
    let close = body.len() - 1;
    // The opening quote: the nearest one before that no backslash escapes.
    let mut open = close;
    loop {
        open = body[..open].rfind(char::from(q))?;
        if !body[..open].ends_with('\\') {
            break;
        }
    }
    // Any blank of [`is_value_blank`]: a line pasted from a page.
    let head = body[..open].trim_end_matches(is_value_blank);
    let (name_end, assigned) = match head.strip_suffix("<-") {
        // `<<-` assigns in an enclosing scope.
        Some(h) => (h.strip_suffix('<').unwrap_or(h).trim_end_matches(is_value_blank), true),
        None if head.len() < open => (head, false),
        None => return None,
    };
    let name_len =
        name_end.bytes().rev().take_while(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')).count();
    let (lead, name) = name_end.split_at(name_end.len() - name_len);
    let word_start = lead.is_empty() || lead.ends_with(is_value_blank);
    // Without `<-`, a config statement: the name first on its line, or after
    // `set` (Juniper, FortiOS) or a user and its name (`username admin
    // password "pw"`; `user bob created secret "x"` is a log line).
    let lead = lead.trim_start_matches(is_value_blank);
    let after = |w: &str| lead.get(..w.len()).filter(|l| l.eq_ignore_ascii_case(w)).map(|_| &lead[w.len()..]);
    let statement = lead.is_empty()
        || after("set ").is_some()
        || ["username ", "user "].iter().filter_map(|w| after(w)).any(|user| {
            let user = user.trim_matches(is_value_blank);
            !user.is_empty() && !user.contains(is_value_blank)
        });
    let value = &body[open + 1..close];
    if name.is_empty()
        || name_len > CALL_NAME_MAX
        || !word_start
        || !(assigned || statement)
        || keep_value(value)
        || (!assigned && STATUS_WORDS.iter().any(|w| value.trim_end_matches(['.', '!']).eq_ignore_ascii_case(w)))
        || !key_info(name).secret
    {
        return None;
    }
    Some((open + 1, close))
}

/// `line` without a comment after a closing quote and a blank or `;`
/// (Junos's `"x"; ## SECRET-DATA`, `"x" # note`, `"x" // note`), up to that
/// quote; `line` itself when it ends with a quote or has no such comment.
fn before_comment(line: &str) -> &str {
    let b = line.as_bytes();
    if matches!(b.last(), None | Some(b'"' | b'\'')) {
        return line;
    }
    // The first comment mark after a quote whose text before it ends with
    // a quote: one inside the quoted value (`"a #b" # c`) is passed by.
    let Some(quote) = memchr::memchr2(b'"', b'\'', b) else { return line };
    for at in memchr::memchr2_iter(b'#', b'/', &b[quote..]).map(|i| quote + i) {
        if b[at] == b'/' && b.get(at + 1) != Some(&b'/') {
            continue;
        }
        let head = line[..at].trim_end_matches([' ', '\t', ';']);
        if head.len() < at && head.ends_with(['"', '\'']) {
            return head;
        }
    }
    line
}

/// Longest CSV header field read as a column's name.
const CSV_NAME_MAX: usize = 48;

/// The delimiters a CSV header may use.
const CSV_DELIMITERS: [u8; 3] = [b',', b'\t', b';'];

/// CSV blocks: a header row of column names (`user,password,host`) naming
/// a secret column, and the rows right below it with as many fields, whose
/// field in that column is masked. The block ends at a row with another
/// number of fields.
#[inline(never)]
fn csv_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    let line_end = |from: usize| memchr::memchr(b'\n', &b[from..]).map_or(b.len(), |i| from + i);
    let mut start = 0;
    while start < b.len() {
        let end = line_end(start);
        let Some((delim, count, secret)) = csv_header(&s[start..end], key_info) else {
            start = end + 1;
            continue;
        };
        let mut row = end + 1;
        while row < b.len() {
            let row_end = line_end(row);
            let fields = csv_fields(&s[row..row_end], delim);
            if fields.len() != count {
                break;
            }
            for &column in &secret {
                let (from, to) = fields[column];
                let field = &s[row + from..row + to];
                let lead = field.len() - field.trim_start_matches(' ').len();
                let field = field.trim_matches(' ');
                let (v_start, v_end) = unquote(row + from + lead, field);
                if !keep_value(&s[v_start..v_end]) {
                    spans.push((v_start, v_end));
                }
            }
            row = row_end + 1;
        }
        // The row that ended the block may start another.
        start = row;
    }
}

/// A CSV header row: its delimiter, its number of fields and the columns
/// whose names are secret; `None` unless every field is a column name, one
/// word each (`Enter user, password, host` is prose).
fn csv_header(line: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo) -> Option<(u8, usize, Vec<usize>)> {
    let delim = *CSV_DELIMITERS.iter().find(|&&d| line.as_bytes().contains(&d))?;
    let fields = csv_fields(line, delim);
    let name = |&(a, z): &(usize, usize)| line[a..z].trim_matches(|c| c == '"' || c == ' ');
    let name_like = |n: &str| {
        (1..=CSV_NAME_MAX).contains(&n.len())
            && n.starts_with(|c: char| c.is_ascii_alphabetic())
            && n.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    };
    if fields.len() < 2 || !fields.iter().map(name).all(name_like) {
        return None;
    }
    let secret: Vec<usize> =
        fields.iter().map(name).enumerate().filter(|(_, n)| key_info(n).secret).map(|(i, _)| i).collect();
    (!secret.is_empty()).then_some((delim, fields.len(), secret))
}

/// The fields of one CSV row (spans in `line`, a trailing `\r` left out);
/// a field in double quotes may hold the delimiter (`""` is a quote).
fn csv_fields(line: &str, delim: u8) -> Vec<(usize, usize)> {
    let b = line.as_bytes();
    let len = if b.last() == Some(&b'\r') { b.len() - 1 } else { b.len() };
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        let lead = b[i..len].iter().take_while(|&&c| c == b' ').count();
        if b.get(i + lead) == Some(&b'"') && i + lead < len {
            i += lead + 1;
            while i < len {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
        }
        let end = b[i.min(len)..len].iter().position(|&c| c == delim).map_or(len, |p| i.min(len) + p);
        fields.push((start, end));
        if end >= len {
            return fields;
        }
        i = end + 1;
    }
}

/// Longest prompt read before a Redis command (`redis 127.0.0.1:6379[2]>`).
const PROMPT_MAX: usize = 64;

/// The password of Redis's `AUTH [user] password` command: `AUTH` at a
/// line's start (upper case: prose starts lines with "Auth" too) or after
/// a `redis-cli` prompt (`127.0.0.1:6379> auth pw`, `redis> AUTH u pw`),
/// with one or two words after it; the last is the password. `AUTH failed`
/// and a word with more after it (`auth failed for user bob`) stay.
fn redis_auth_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(off) = find_ascii_ci(&s[from..], "auth ") {
        let at = from + off;
        from = at + 5;
        let floor = at.saturating_sub(PROMPT_MAX);
        let line_start = match memchr::memrchr(b'\n', &b[floor..at]) {
            Some(i) => floor + i + 1,
            None if floor == 0 => 0,
            None => continue,
        };
        // Both ends are boundaries: a line's start and an ASCII match.
        let head = s[line_start..at].trim();
        let command = if head.is_empty() {
            &s[at..at + 4] == "AUTH"
        } else {
            head.strip_suffix('>').is_some_and(|p| {
                p.to_ascii_lowercase().contains("redis") || p.ends_with(|c: char| c.is_ascii_digit() || c == ']')
            })
        };
        if !command {
            continue;
        }
        let line_end = memchr::memchr(b'\n', &b[from..]).map_or(b.len(), |i| from + i);
        let mut words = s[from..line_end].split_ascii_whitespace();
        let last = match (words.next(), words.next(), words.next()) {
            (Some(w), None, _) | (Some(_), Some(w), None) => w,
            _ => continue,
        };
        let start = from + s[from..line_end].rfind(last).unwrap_or(0);
        if last.ends_with(':') || STATUS_WORDS.iter().any(|w| last.eq_ignore_ascii_case(w)) || keep_value(last) {
            continue;
        }
        spans.push(unquote(start, last));
        from = start + last.len();
    }
}

/// Longest name read as a call's name or as a quoted name argument.
const CALL_NAME_MAX: usize = 64;

/// Secrets passed as quoted arguments in code: a value after a quoted
/// secret name (`define('DB_PASSWORD', 'x')`, `setenv("API_KEY", "x")`,
/// `("password", "x")`), the argument of a setter whose name is a secret's
/// (`setPassword("x")`, `set_api_key('x')`, a builder's `.password("x")`),
/// and the second of two given to a login or an HTTP auth helper
/// (`HTTPBasicAuth('user', 'x')`, `.basic_auth("user", "x")`, `login("u", "x")`).
/// Only quoted literals count: `setPassword(pw)` names no secret, and a
/// quoted argument glued to more (`"a" + b`) is no literal.
fn call_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(off) = memchr::memchr(b'(', &b[from..]) {
        let open = from + off;
        from = open + 1;
        let Some(first) = quoted_arg(s, open + 1) else { continue };
        let second = match b.get(first.2) {
            Some(b',') => quoted_arg(s, first.2 + 1),
            _ => None,
        };
        let callee = callee_before(s, open);
        let target = match second {
            Some(second) => {
                let name = &s[first.0..first.1];
                let named = name.len() <= CALL_NAME_MAX
                    && !name.is_empty()
                    && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
                    && key_info(name).secret;
                let constructed = b.get(second.2) == Some(&b')') && credential_constructor(s, callee, open);
                let third = (b.get(second.2) == Some(&b',') && connect_call(callee))
                    .then(|| quoted_arg(s, second.2 + 1))
                    .flatten();
                third.or_else(|| {
                    (named || login_call(callee) || constructed || setter_call(callee, s, open, key_info))
                        .then_some(second)
                })
            }
            None => setter_call(callee, s, open, key_info).then_some(first),
        };
        if let Some((start, end, after)) = target {
            if !keep_value(&s[start..end]) {
                spans.push((start, end));
            }
            from = from.max(after);
        }
    }
}

/// Backslashes before a quoted argument's quote that [`quoted_arg`] reads.
const MAX_QUOTE_ESCAPES: usize = 15;

/// A quoted literal argument starting at `at` (after blanks): its content's
/// span and where the text goes on after it and the blanks that follow,
/// which must be `,` or `)`. Quotes escaped once or more (`(\"x\")`, code
/// in JSON in text) count; a literal cut off at its line's end runs to it.
fn quoted_arg(s: &str, at: usize) -> Option<(usize, usize, usize)> {
    let b = s.as_bytes();
    let start = at + b.get(at..)?.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    let slashes = b.get(start..)?.iter().take_while(|&&c| c == b'\\').count();
    let q = *b.get(start + slashes).filter(|&&c| c == b'"' || c == b'\'')?;
    // Escaped a few times at most (code in JSON in text); more is no argument.
    if slashes > MAX_QUOTE_ESCAPES {
        return None;
    }
    let open = start + slashes + 1;
    let mut i = open;
    let close = loop {
        match b.get(i) {
            None | Some(b'\n' | b'\r') => return Some((open, i, i)),
            Some(&c) if c == q && i - open >= slashes && b[i - slashes..i].iter().all(|&c| c == b'\\') => {
                break i - slashes;
            }
            // An escape as the text's last byte ends the literal with the text.
            Some(b'\\') if slashes == 0 => i = (i + 2).min(b.len()),
            Some(_) => i += 1,
        }
    };
    // Past the closing quote, which is within the text.
    let i = i + 1;
    let next = i + b[i..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    matches!(b.get(next), Some(b',' | b')')).then_some((open, close, next))
}

/// The name of the function called at the `(` at `open`: the word before
/// it (`setPassword` of `user.setPassword(`), empty when there is none.
fn callee_before(s: &str, open: usize) -> &str {
    let head = &s.as_bytes()[open.saturating_sub(CALL_NAME_MAX)..open];
    let len = head.iter().rev().take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_').count();
    &s[open - len..open]
}

/// Whether `callee` takes a user and a password (`login`, `authenticate`,
/// an HTTP auth helper: `HTTPBasicAuth`, `HTTPDigestAuth`, `basic_auth`).
fn login_call(callee: &str) -> bool {
    let c = callee.to_ascii_lowercase().replace('_', "");
    matches!(c.as_str(), "login" | "authenticate" | "signin" | "logon") || (c.len() > 4 && c.ends_with("auth"))
}

/// Whether `callee` connects to a database given a host or URL, a user and
/// a password, in that order: JDBC's `getConnection`, PHP's
/// `mysqli_connect` and `new mysqli`.
fn connect_call(callee: &str) -> bool {
    matches!(callee, "getConnection" | "mysqli_connect" | "mysql_connect" | "mysql_pconnect" | "mysqli")
}

/// Whether the call at `open` constructs credentials from a user and a
/// password: `new NetworkCredential("u", "pw")`, `new
/// UsernamePasswordCredentials(...)`, `new BasicAWSCredentials(...)` (a type
/// named `...Credential(s)` after `new`, with exactly two arguments, which
/// the caller checks). A getter (`GetCredentials("github", "bob")`) has no `new`.
fn credential_constructor(s: &str, callee: &str, open: usize) -> bool {
    const NEW: &str = "new ";
    let lower = callee.to_ascii_lowercase();
    let typed = lower.strip_suffix('s').unwrap_or(&lower).strip_suffix("credential").is_some_and(|p| !p.is_empty());
    if !typed {
        return false;
    }
    // The type's namespace (`new System.Net.NetworkCredential(`), then `new`.
    let head = &s.as_bytes()[open.saturating_sub(CALL_NAME_MAX)..open - callee.len()];
    let qualified = head.iter().rev().take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.').count();
    head[..head.len() - qualified].ends_with(NEW.as_bytes())
}

/// Words that begin a setter's name: what follows is what it sets.
const SETTER_VERBS: &[&str] = &["set", "with", "use", "put", "update", "change", "store", "save", "enter", "provide"];

/// Whether `callee` sets a secret from its argument: a setter verb and a
/// secret name (`setPassword`, `set_api_key`, `withToken`), or a builder
/// method named only by a secret name (`.password(`, `.apiKey(`: a method,
/// lowercase, called after a `.`). Not a getter's, a check's or an
/// exception's name (`getPassword("alice")`, `PasswordError("too short")`).
fn setter_call(callee: &str, s: &str, open: usize, key_info: &mut dyn FnMut(&str) -> KeyInfo) -> bool {
    if callee.is_empty() {
        return false;
    }
    for verb in SETTER_VERBS {
        if callee.len() > verb.len() && callee.as_bytes()[..verb.len()].eq_ignore_ascii_case(verb.as_bytes()) {
            let rest = &callee[verb.len()..];
            if rest.starts_with(|c: char| c.is_ascii_uppercase() || c == '_') {
                return key_info(rest.trim_start_matches('_')).secret;
            }
        }
    }
    s[..open - callee.len()].ends_with('.')
        && callee.starts_with(|c: char| c.is_ascii_lowercase())
        && builder_name(callee)
}

/// Whether a method name is a secret's name alone, not an action on one
/// (`.password(`, `.api_key(`, not `.getPassword(`, `.resetPassword(`,
/// `.passwordPolicy(`).
fn builder_name(callee: &str) -> bool {
    let lower = callee.to_ascii_lowercase().replace('_', "");
    matches!(
        lower.as_str(),
        "password"
            | "passwd"
            | "passphrase"
            | "secret"
            | "token"
            | "apikey"
            | "accesstoken"
            | "secretkey"
            | "clientsecret"
            | "authtoken"
            | "bearertoken"
            | "privatekey"
            | "accesskey"
            | "secretaccesskey"
    )
}

/// Longest `user:password` looked back for before a Go DSN's `@tcp(`.
const DSN_USERPASS_MAX: usize = 256;

/// Passwords in Go's MySQL DSNs, `user:password@tcp(host:3306)/db` and
/// `user:password@unix(/path)/db`, and in connection strings without a
/// scheme, `user:password@host:5432/db`, which have no `//` before the
/// user: the text between the word's first `:` and the `@`.
fn go_dsn_spans(s: &str, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    // Most texts with a separator hold no `@`, the others few: each is looked at.
    for at in memchr::memchr_iter(b'@', b) {
        let host = &b[at + 1..];
        let go = host.starts_with(b"tcp(") || host.starts_with(b"unix(");
        if go || host_port(host) {
            let mut floor = at.saturating_sub(DSN_USERPASS_MAX);
            while !s.is_char_boundary(floor) {
                floor += 1;
            }
            // Without `tcp(`, a `/` before the `@` is a URL's (its scanner's)
            // or a path's: the look back stops there.
            let stop = b[floor..at].iter().rposition(|&c| {
                c.is_ascii_whitespace()
                    || matches!(c, b'"' | b'\'' | b'`' | b'=' | b'(' | b',' | b';' | b'<' | b'>')
                    || (c == b'/' && !go)
            });
            if stop.is_some_and(|i| b[floor + i] == b'/') {
                continue;
            }
            let start = stop.map_or(floor, |i| floor + i + 1);
            if let Some(colon) = b[start..at].iter().position(|&c| c == b':') {
                if start + colon + 1 < at {
                    spans.push((start + colon + 1, at));
                }
            }
        }
    }
}

/// Whether `host` starts with a host name and a port that ends the word or
/// starts its path (`db.internal:5432/app`, `db:5432`): after
/// `user:password@`, a connection string without its scheme. The port is
/// what tells it from `git@github.com:org/repo` and prose.
fn host_port(host: &[u8]) -> bool {
    let name = host.iter().take_while(|&&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-').count();
    if name == 0 || host.get(name) != Some(&b':') {
        return false;
    }
    let port = host[name + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
    (2..=5).contains(&port)
        && host.get(name + 1 + port).is_none_or(|&c| {
            c.is_ascii_whitespace() || matches!(c, b'/' | b'?' | b'"' | b'\'' | b'`' | b',' | b';' | b')' | b'>')
        })
}

/// Whether `key`, a slice of `s`, is an Oracle JDBC driver type after
/// `oracle:` (`jdbc:oracle:thin:`, `jdbc:oracle:oci:`).
fn oracle_driver(s: &str, key: &str) -> bool {
    const ORACLE: &[u8] = b"oracle:";
    if !["thin", "oci", "oci8"].iter().any(|d| key.eq_ignore_ascii_case(d)) {
        return false;
    }
    let key_at = key.as_ptr() as usize - s.as_ptr() as usize;
    key_at >= ORACLE.len() && s.as_bytes()[key_at - ORACLE.len()..key_at].eq_ignore_ascii_case(ORACLE)
}

/// The password of an Oracle connect string `user/password@host...` at
/// `from`: what lies between the first `/` and the last `@` of the word.
fn oracle_password(s: &str, from: usize) -> Option<(usize, usize)> {
    let word = &s[from..];
    let word =
        &word[..word.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>')).unwrap_or(word.len())];
    let slash = word.find('/')?;
    let at = word.rfind('@')?;
    (slash > 0 && !word[..slash].contains('@') && at > slash + 1).then_some((from + slash + 1, from + at))
}

/// Whether `key` names the `Set-Cookie` header.
fn set_cookie_key(key: &str) -> bool {
    ["set-cookie", "set_cookie", "setcookie"].iter().any(|k| key.eq_ignore_ascii_case(k))
}

/// Whether `key` names an HTTP authorization header (`Authorization`,
/// `Proxy-Authorization`, `HTTP_AUTHORIZATION`).
fn authorization_key(key: &str) -> bool {
    const NAME: &str = "authorization";
    key.len() >= NAME.len() && key.is_char_boundary(key.len() - NAME.len()) && {
        let tail = &key[key.len() - NAME.len()..];
        tail.eq_ignore_ascii_case(NAME)
    }
}

/// Whether `value`, the first word of an authorization header, is a scheme
/// no list knows (`SSWS`, `Bot`, `Zoho-oauthtoken`, `SharedKey`, `AWS`):
/// a word of letters and hyphens, no digit (a credential has some), with a
/// credential after it on its line. A bare credential is masked as a value.
fn vendor_scheme(s: &str, value: &str, v_end: usize) -> bool {
    let word = value.len() <= 32
        && value.starts_with(|c: char| c.is_ascii_alphabetic())
        && value.bytes().all(|c| c.is_ascii_alphabetic() || c == b'-' || c == b'_');
    let rest = &s[v_end..];
    let after = trim_blanks_start(rest);
    word && after.len() < rest.len() && after.starts_with(|c: char| !c.is_whitespace())
}

/// The end of an authorization header's credential starting at `start`: one
/// word (`token68`), or a comma-separated list of parameters whose quoted
/// values may hold blanks (`username="a b", response="..."`). It stops at the
/// line's end, a blank after the last parameter, or a quote that closes the
/// text around the header (`-H "Authorization: ..."`).
fn auth_params_end(s: &str, start: usize) -> usize {
    let b = s.as_bytes();
    let mut i = start;
    let mut end = start;
    loop {
        // One word, with a quoted value after its `=`.
        while i < b.len() {
            match b[i] {
                b'"' | b'\'' if i > start && b[i - 1] == b'=' => {
                    let q = b[i];
                    i += 1;
                    while i < b.len() && b[i] != q && b[i] != b'\n' {
                        i += if b[i] == b'\\' && q == b'"' { 2 } else { 1 };
                    }
                    // Past the closing quote; a value cut off at its line's end stops there.
                    i = if i < b.len() && b[i] == q { i + 1 } else { i.min(b.len()) };
                    while !s.is_char_boundary(i) {
                        i -= 1;
                    }
                }
                b'"' | b'\'' | b'`' | b'<' | b'>' | b',' | b'\\' => break,
                c if c.is_ascii_whitespace() => break,
                _ => {
                    // A non-ASCII blank ends the word too.
                    let ch = s[i..].chars().next().map_or(' ', |c| c);
                    if is_value_blank(ch) || ch.is_whitespace() {
                        break;
                    }
                    i += ch.len_utf8();
                }
            }
        }
        end = end.max(i);
        // Another parameter after a comma continues the list.
        let rest = &s[i..];
        let after_comma = rest.strip_prefix(',').map(|r| r.trim_start_matches([' ', '\t']));
        match after_comma {
            Some(next) if !next.is_empty() && !next.starts_with(['\r', '\n', '"', '\'']) => {
                i = s.len() - next.len();
            }
            _ => return end,
        }
    }
}

/// The first byte of the fullwidth separators `＝` (U+FF1D) and `：` (U+FF1A),
/// which CJK text and input methods put where ASCII text has `=` and `:`.
const FULLWIDTH_LEAD: u8 = 0xEF;

/// `=` or `:` when a fullwidth separator starts at `at` (its lead byte is there).
fn fullwidth_sep(b: &[u8], at: usize) -> Option<u8> {
    match b.get(at + 1..at + 3)? {
        [0xBC, 0x9D] => Some(b'='),
        [0xBC, 0x9A] => Some(b':'),
        _ => None,
    }
}

/// Pairs whose key reads as secret but whose form says they hold none: a
/// stack frame's `TokenService.java:88` or `token.go:42` (a source file and a
/// line number), a `WWW-Authenticate` challenge (`Bearer realm="api"`: the
/// server's request for a credential, never one), and the working
/// directory `PWD=/home/alice` of a `sudo` log line or an environment dump.
fn not_a_secret_pair(key: &str, sep: u8, after: &str) -> bool {
    if sep == b':' && after.starts_with(|c: char| c.is_ascii_digit()) && source_file(key) {
        return true;
    }
    if key.len() > 20 {
        return false;
    }
    let k = key.to_ascii_lowercase();
    k.ends_with("-authenticate")
        || (matches!(k.as_str(), "pwd" | "oldpwd")
            && key.bytes().all(|c| c.is_ascii_uppercase())
            && sep == b'='
            && after.starts_with('/'))
        // sudo's syslog line: `sudo: alice : TTY=pts/0 ; PWD=... ; COMMAND=...`.
        || (k == "sudo" && sep == b':' && sudo_log_line(after))
}

/// Whether `after` (the text after `sudo:`) is sudo's log line: ` user : ` then `TTY=` or a count.
fn sudo_log_line(after: &str) -> bool {
    let rest = after.trim_start_matches(' ');
    let user_len = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    user_len > 0 && rest[user_len..].starts_with(" : ") && {
        let tail = &rest[user_len + 3..];
        tail.starts_with("TTY=")
            || tail.starts_with(|c: char| c.is_ascii_digit())
            || tail.starts_with("command not allowed")
    }
}

/// Percent-encoded pairs, `password%3Dx%26user%3Dbob` (a form body or a
/// URL carried inside another URL's query, `%253D` when encoded twice):
/// each encoded `=` looks back for its key; the value runs to the encoded
/// or plain `&`, a blank or a quote.
fn pct_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    let mut at = 0;
    let mut key_floor = 0;
    while let Some(off) = memchr::memchr(b'%', &b[at..]) {
        let pct = at + off;
        // `key%3Dvalue`, or percent-encoded JSON: `%22key%22%3A%22value%22`.
        let (sep_end, key, json) = if let Some(sep_end) = encoded(b, pct, b"3d") {
            (sep_end, key_before(s, key_floor, pct), false)
        } else if let Some(sep_end) = encoded(b, pct, b"3a") {
            (sep_end, encoded_json_key(s, key_floor, pct), true)
        } else {
            at = pct + 1;
            continue;
        };
        at = sep_end;
        let Some(key) = key else { continue };
        key_floor = sep_end;
        if !key_info(key).secret {
            continue;
        }
        let mut start = sep_end;
        if json {
            // The spaces after the colon (`%20`, or `+` from a form
            // encoder: `quote(json.dumps(d))`), then the value's opening quote.
            loop {
                if b.get(start) == Some(&b'+') {
                    start += 1;
                } else if let Some(e) = (b.get(start) == Some(&b'%')).then(|| encoded(b, start, b"20")).flatten() {
                    start = e;
                } else {
                    break;
                }
            }
            if b.get(start) == Some(&b'%') {
                start = encoded(b, start, b"22").unwrap_or(start);
            }
        }
        let mut end = start;
        while end < b.len() {
            let c = b[end];
            if c.is_ascii_whitespace() || matches!(c, b'&' | b'"' | b'\'' | b'<' | b'>' | b'#' | b';') {
                break;
            }
            if c == b'%'
                && (encoded(b, end, b"26").is_some()
                    || (json && [b"22", b"2c", b"7d"].iter().any(|code| encoded(b, end, code).is_some())))
            {
                break;
            }
            end += 1;
        }
        if !keep_value(&s[start..end]) {
            spans.push((start, end));
        }
        at = at.max(end);
        key_floor = at;
    }
}

/// The key of percent-encoded JSON whose `%3A` starts at `pct`: the name
/// between two encoded quotes (`%22`, `%2522`), right before it.
fn encoded_json_key(s: &str, floor: usize, pct: usize) -> Option<&str> {
    let b = s.as_bytes();
    // The closing quote: `%`, `25`s, `22`, ending at `pct`.
    let mut q = pct.checked_sub(2).filter(|&q| q >= floor && &b[q..pct] == b"22")?;
    while q >= floor + 2 && &b[q - 2..q] == b"25" {
        q -= 2;
    }
    let close = q.checked_sub(1).filter(|&c| c >= floor && b[c] == b'%')?;
    let open = memchr::memrchr(b'%', &b[floor..close]).map(|i| floor + i)?;
    let key_start = encoded(b, open, b"22")?;
    let key = s.get(key_start..close)?;
    (!key.is_empty() && key.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')))
        .then_some(key)
}

/// The end of `%` (`25`)* `code` at `pct` (`code` lowercase hex), or `None`.
fn encoded(b: &[u8], pct: usize, code: &[u8; 2]) -> Option<usize> {
    let mut i = pct + 1;
    while b.get(i..i + 2).is_some_and(|w| w == b"25")
        && b.get(i + 2..i + 4).is_some_and(|w| w.eq_ignore_ascii_case(code) || w == b"25")
    {
        i += 2;
    }
    b.get(i..i + 2).filter(|w| w.eq_ignore_ascii_case(code)).map(|_| i + 2)
}

/// XML and HTML elements whose name is a secret key:
/// `<password>x</password>`, `<ns:ApiKey>x</ns:ApiKey>`, CDATA too. Each
/// closing tag looks back to the opening tag right before its text; the
/// backward scans stop at the previous closing tag, so the pass is linear.
fn xml_spans(s: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo, spans: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    let mut from = 0;
    let mut floor = 0;
    while let Some(off) = CLOSE_TAG.find(&b[from..]) {
        let close = from + off;
        from = close + 2;
        let name_len = s[from..]
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
            .unwrap_or(s.len() - from);
        let name = &s[from..from + name_len];
        if name.is_empty() || b.get(from + name_len) != Some(&b'>') {
            continue;
        }
        let base = floor;
        floor = from + name_len + 1;
        let head = &s[base..close];
        // The text, and the `>` that ends the opening tag before it.
        let (text_start, text_end, gt) = if let Some(h) = head.strip_suffix("]]>") {
            match h.rfind("<![CDATA[") {
                Some(i) if i > 0 => (base + i + 9, base + h.len(), base + i - 1),
                _ => continue,
            }
        } else {
            match head.rfind('>') {
                Some(i) => (base + i + 1, close, base + i),
                None => continue,
            }
        };
        if b[gt] != b'>' {
            continue;
        }
        let Some(lt) = s[base..gt].rfind('<') else { continue };
        let tag = &s[base + lt + 1..gt];
        if tag.split(char::is_whitespace).next() != Some(name) {
            continue;
        }
        let local = name.rsplit(':').next().unwrap_or(name);
        let secret = key_info(local).secret || attribute_names_secret(tag, key_info);
        if secret && !keep_value(s[text_start..text_end].trim()) {
            push_trimmed(s, text_start, text_end, spans);
        }
    }
}

/// Whether an opening tag's `name` or `key` attribute names a secret, so
/// that the element's text is its value (`<entry key="db.password">`, an
/// Android `<string name="api_key">`).
fn attribute_names_secret(tag: &str, key_info: &mut dyn FnMut(&str) -> KeyInfo) -> bool {
    let mut rest = tag;
    while let Some(eq) = rest.find('=') {
        let attr = rest[..eq].trim_end();
        let attr = attr.rsplit(char::is_whitespace).next().unwrap_or("");
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|&c| c == '"' || c == '\'') else {
            rest = &rest[eq + 1..];
            continue;
        };
        let body = &after[1..];
        let Some(close) = body.find(q) else { return false };
        if (attr.eq_ignore_ascii_case("name") || attr.eq_ignore_ascii_case("key")) && key_info(&body[..close]).secret {
            return true;
        }
        rest = &body[close + 1..];
    }
    false
}

/// A heredoc after a secret key's separator (`private_key = <<EOF`, HCL or
/// shell; `<<-EOT`, `<<~EOT`, `<<'EOF'` too): the span of its lines, up to
/// the line that closes it, or to the end of the text when none does.
fn heredoc(s: &str, from: usize) -> Option<(usize, usize)> {
    let rest = trim_blanks_start(&s[from..]);
    let word = rest.strip_prefix("<<")?;
    let word = word.strip_prefix(['-', '~']).unwrap_or(word);
    let (word, quote) = match word.strip_prefix(['"', '\'']) {
        Some(w) => (w, word.chars().next()),
        None => (word, None),
    };
    let len = word.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(word.len());
    let (tag, line_rest) = word.split_at(len);
    if tag.is_empty() || !tag.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return None;
    }
    let line_rest = match quote {
        Some(q) => line_rest.strip_prefix(q)?,
        None => line_rest,
    };
    let newline = line_rest.find('\n')?;
    if !line_rest[..newline].trim().is_empty() {
        return None;
    }
    let body = s.len() - line_rest.len() + newline + 1;
    let mut at = body;
    let mut end = s.len();
    while at < s.len() {
        let line_end = s[at..].find('\n').map_or(s.len(), |i| at + i);
        if s[at..line_end].trim() == tag {
            end = at;
            break;
        }
        at = line_end + 1;
    }
    let text = s[body..end].trim_end();
    (!text.trim().is_empty()).then_some((body + (text.len() - text.trim_start().len()), body + text.len()))
}

/// What may sit between a key, its separator and its value: spaces and tabs,
/// and the no-break spaces French typography puts before a colon.
const BLANKS: [char; 4] = [' ', '\t', '\u{a0}', '\u{202f}'];

/// `s` without its trailing [`BLANKS`], read as bytes (this runs at every
/// separator), and without the rarer gaps of [`is_key_gap`], read as
/// characters only when the text before the blanks ends in a control
/// character or a non-ASCII one.
#[inline]
fn trim_blanks_end(s: &str) -> &str {
    let mut b = s.as_bytes();
    loop {
        b = match b {
            [rest @ .., b' ' | b'\t'] => rest,
            [rest @ .., 0xC2, 0xA0] => rest,
            [rest @ .., 0xE2, 0x80, 0xAF] => rest,
            _ => break,
        };
    }
    match b.last() {
        Some(&c) if !(0x20..0x7F).contains(&c) && c != b'\n' && c != b'\r' => s[..b.len()].trim_end_matches(is_key_gap),
        _ => &s[..b.len()],
    }
}

/// What may sit between a key and its separator: a value blank, or any
/// other control character but a line break (`password\0=x`, a NUL left by
/// a C string); a line break ends the key's line.
fn is_key_gap(c: char) -> bool {
    is_value_blank(c) || (c.is_control() && c != '\n' && c != '\r')
}

/// What may sit between a separator and its value: [`BLANKS`], and the
/// spaces pasted or generated text carries instead (thin, ideographic or
/// zero-width spaces, a vertical tab, form feed or NUL) or invisible
/// characters (a soft hyphen, a word joiner, direction marks): the same set as
/// `blank_class!`, the patterns' between a scheme and its credential.
fn is_value_blank(c: char) -> bool {
    BLANKS.contains(&c)
        || matches!(
            c,
            '\x0B'
                | '\x0C'
                | '\0'
                | '\u{AD}'
                | '\u{1680}'
                | '\u{180E}'
                | '\u{2000}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{205F}'..='\u{206F}'
                | '\u{3000}'
                | '\u{FEFF}'
        )
}

/// `s` without its leading blanks (see [`is_value_blank`]).
#[inline]
fn trim_blanks_start(s: &str) -> &str {
    s.trim_start_matches(is_value_blank)
}

/// Longest run of blanks there (bytes): aligned config files pad keys to a column.
const MAX_BLANKS: usize = 64;

/// Longest text after a key's colon, on its line, for a YAML block to follow.
const YAML_HEAD_MAX: usize = 128;

/// A YAML value on the lines after its key, `password: |`, `token: !vault |`,
/// `api_key:` followed by an indented scalar or list: the span of the lines
/// indented deeper than the key, or `None` when the value sits on the key's line.
fn yaml_block(s: &str, key: &str, sep_end: usize) -> Option<(usize, usize)> {
    let b = s.as_bytes();
    // What may follow the key on its line is short (blanks, a tag, a block
    // indicator): the newline is looked for in a bounded window, so a long
    // line full of `password: x` pairs is not scanned to its end at each one.
    // Blanks first (each run is skipped once: the next key lies after it).
    let head = s.len() - trim_blanks_start(&s[sep_end..]).len();
    let window = &b[head..b.len().min(head.saturating_add(YAML_HEAD_MAX))];
    let line_end = match memchr::memchr(b'\n', window) {
        Some(i) => head + i,
        None if head + window.len() == b.len() => b.len(),
        None => return None,
    };
    let rest = s[sep_end..line_end].trim_matches(|c: char| BLANKS.contains(&c) || c == '\r');
    let rest = match rest.strip_prefix('!') {
        // A tag (`!vault`), then the block indicator.
        Some(tagged) => tagged.split_once([' ', '\t']).map_or("", |(_, r)| r.trim_start()),
        None => rest,
    };
    let indicator =
        rest.strip_prefix(['|', '>']).is_some_and(|r| r.bytes().all(|c| matches!(c, b'-' | b'+' | b'0'..=b'9')));
    if !(rest.is_empty() || indicator) || line_end >= b.len() {
        return None;
    }
    let key_at = key.as_ptr() as usize - s.as_ptr() as usize;
    let line_start = s[..key_at].rfind('\n').map_or(0, |i| i + 1);
    let key_col = key_at - line_start;
    let (mut first, mut last) = (None, line_end);
    let mut at = line_end + 1;
    while at < b.len() {
        let end = memchr::memchr(b'\n', &b[at..]).map_or(b.len(), |i| at + i);
        let line = &s[at..end];
        let content = line.trim_start_matches(BLANKS);
        if !content.trim().is_empty() {
            if line.len() - content.len() <= key_col {
                break;
            }
            first.get_or_insert(at + line.len() - content.len());
            last = at + line.trim_end().len();
        }
        at = end + 1;
    }
    first.map(|f| (f, last))
}

/// The key that ends just before `sep` (after optional blanks and a closing
/// quote), not reaching back past `floor`.
#[inline]
fn key_before(s: &str, floor: usize, sep: usize) -> Option<&str> {
    let head = &s[floor..sep];
    let trimmed = trim_blanks_end(head);
    if head.len() - trimmed.len() > MAX_BLANKS {
        return None;
    }
    // A quoted subscript (`os.environ["API_KEY"] = "x"`, `$_ENV['DB_PASSWORD'] = 'x'`) is its key.
    let trimmed = match trimmed.strip_suffix(']') {
        Some(t) if t.ends_with(['"', '\'']) => t,
        _ => trimmed,
    };
    // A quoted key, its quotes escaped when the text is JSON inside a string (`\"password\"`).
    let trimmed = match trimmed.strip_suffix(['"', '\'']) {
        Some(t) => t.trim_end_matches('\\'),
        None => trimmed,
    };
    let start = trimmed.char_indices().rev().take_while(|&(_, c)| key_char(c)).last().map(|(i, _)| i)?;
    // A key starts at a word character (`--db-password` -> `db-password`).
    let mut key = trimmed[start..].trim_start_matches(|c: char| !c.is_alphanumeric() && c != '_');
    // After a percent escape (`%26password`, `%2526password`), the escape's
    // hex digits are not part of the key.
    if trimmed[..trimmed.len() - key.len()].ends_with('%') {
        let hex2 = |k: &str| k.len() > 2 && k.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit);
        if hex2(key) {
            let twice = key.starts_with("25");
            key = &key[2..];
            if twice && hex2(key) {
                key = &key[2..];
            }
        }
    }
    (!key.is_empty()).then_some(key)
}

/// Longest name a name field's value is read for: names are short, and
/// the bound keeps a text full of name fields linear.
const NAME_MAX: usize = 256;

/// The name after a name field's separator, read from at most [`NAME_MAX`] bytes.
fn name_after(s: &str, from: usize) -> Option<&str> {
    let mut end = from.saturating_add(NAME_MAX).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bounded = &s[..end];
    if bounded[from..].trim_start_matches([' ', '\t']).starts_with(['[', '{', '(']) {
        return None;
    }
    value_after(bounded, from).map(|(start, end, _)| &s[start..end])
}

/// The value after a separator: `(start, end, quoted)`, quotes excluded.
fn value_after(s: &str, from: usize) -> Option<(usize, usize, bool)> {
    let rest = &s[from..];
    let blanks = rest.len() - trim_blanks_start(rest).len();
    if blanks > MAX_BLANKS {
        return None;
    }
    let mut start = from + blanks;
    let b = s.as_bytes();
    // A Python string prefix (`b'...'`, the repr of bytes; `u`, `r`, `f`,
    // `rb`): the value is the quoted text after it.
    let prefix =
        b[start..].iter().take(2).take_while(|c| matches!(c, b'b' | b'B' | b'u' | b'U' | b'r' | b'R' | b'f' | b'F'));
    let prefix = prefix.count();
    if prefix > 0 && matches!(b.get(start + prefix), Some(b'"' | b'\'')) {
        start += prefix;
    }
    match b.get(start) {
        // A backtick quotes too: a JavaScript template literal, a shell's old command substitution.
        Some(&q @ (b'"' | b'\'' | b'`')) => {
            if b.get(start..start + 3).is_some_and(|t| t.iter().all(|&c| c == q)) {
                // A triple-quoted value (Python, TOML) may span lines.
                let open = start + 3;
                let close = memchr::memmem::find(&b[open..], &[q; 3]).map_or(b.len(), |i| open + i);
                return Some((open, close, true));
            }
            let mut i = start + 1;
            while i < b.len() {
                match b[i] {
                    b'\\' if q != b'\'' => i += 2,
                    // A value cut off before its closing quote (a truncated
                    // line) is masked to the end of its line.
                    b'\r' | b'\n' => return Some((start + 1, i, true)),
                    c if c == q => return Some((start + 1, i, true)),
                    _ => i += 1,
                }
            }
            Some((start + 1, b.len().max(start + 1), true))
        }
        // Quotes escaped once or more (`\"password\": \"x\"`, JSON inside a
        // string inside a text): the value runs to the next quote.
        Some(b'\\') => {
            let k = b[start..].iter().take_while(|&&c| c == b'\\').count();
            let q = *b.get(start + k).filter(|&&c| c == b'"' || c == b'\'')?;
            let open = start + k + 1;
            let close = b[open..].iter().position(|&c| c == q || c == b'\n').map_or(b.len(), |i| open + i);
            let end = open + s[open..close].trim_end_matches('\\').len();
            Some((open, end, true))
        }
        // A container (`password=['a', 'b']`, the str() of a dataclass whose
        // secret field is a list or dict): the value runs to its closing bracket.
        Some(b'[' | b'{' | b'(') => Some((start, bracketed_end(b, start), true)),
        Some(_) => {
            let len = s[start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '&' | ';' | '<' | '>'))
                .unwrap_or(s.len() - start);
            (len > 0).then_some((start, start + len, false))
        }
        None => None,
    }
}

/// The end of the bracketed text opening at `start` (any of `[]{}()`, quotes
/// skipped), or the end of the text when it is never closed: a cut-off
/// secret is masked to the end rather than let through.
fn bracketed_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'[' | b'{' | b'(' => depth += 1,
            b']' | b'}' | b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(s: &str) -> String {
        let mut spans = Vec::new();
        let mut secret = |k: &str| crate::redact::Rules::shared_default().verdict(k).info;
        find_spans(s, &mut secret, &mut spans);
        apply(s, &mut spans, "***").unwrap_or_else(|| s.to_owned())
    }

    #[test]
    fn shapes_compile() {
        assert!(ready());
    }

    #[test]
    fn an_argument_list_in_text_has_the_value_after_a_secret_flag_masked() {
        assert_eq!(
            redact("Command '['pg_dump', '--password', 'hunter2', '--host', 'db']' returned non-zero exit status 1."),
            "Command '['pg_dump', '--password', '***', '--host', 'db']' returned non-zero exit status 1."
        );
        assert_eq!(redact(r#"argv=["app","--api-key","k3y"]"#), r#"argv=["app","--api-key","***"]"#);
        for text in [
            "['app', '--password', '--verbose']",
            "['app', '--token', '$TOKEN']",
            "['app', '--max-tokens', '100']",
            "['app', '--password-file', '/run/pw']",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn sql_parameter_placeholders_stay_readable() {
        for text in [
            "UPDATE users SET password = ? WHERE id = ?",
            "UPDATE users SET password=%s WHERE id=%s",
            "UPDATE users SET password = %(pw)s",
            "UPDATE users SET password = :pw WHERE id = :id",
            "UPDATE users SET password = :1",
        ] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(redact("UPDATE users SET password = 'hunter2'"), "UPDATE users SET password = '***'");
        assert_eq!(redact("password=?x"), "password=***");
        assert_eq!(redact("password=:"), "password=***");
        assert_eq!(redact("password=%(pw)"), "password=***");
    }

    #[test]
    fn the_pair_filter_passes_every_hint_in_any_case_and_context() {
        let sh = SHAPES.as_ref().unwrap();
        for (hint, _) in HINTS {
            assert!(hint.len() >= 2, "{hint}");
            // Mixed case in both phases, so every pair is seen with its bytes in either case.
            let mixed = |phase: usize| -> String {
                hint.chars()
                    .enumerate()
                    .map(|(i, c)| if (i + phase) % 2 == 0 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                    .collect()
            };
            for text in [
                hint.to_string(),
                hint.to_ascii_uppercase(),
                mixed(0),
                mixed(1),
                format!("xx {hint} yy"),
                format!("a{hint}"),
                format!("k=v {hint}"),
            ] {
                assert!(sh.pairs.may_hold_hint(&text), "{text}");
            }
        }
        assert!(!sh.pairs.may_hold_hint("applied changes to the resource graph; "));
        assert!(!sh.pairs.may_hold_hint("/srv/app/module_3.py"));
    }

    #[test]
    fn the_blank_class_and_the_value_blanks_are_one_set() {
        let class = Regex::new(concat!("^", blank_class!(), "$")).unwrap();
        for c in (0..=0x3_FFFF).filter_map(char::from_u32) {
            assert_eq!(class.is_match(c.encode_utf8(&mut [0; 4])), is_value_blank(c), "{c:?}");
        }
    }

    #[test]
    fn the_setting_commands_pattern_compiles() {
        assert!(CONFIG_SET.is_some());
    }

    #[test]
    fn every_first_byte_of_the_chosen_pairs_has_a_bit_of_its_own() {
        // Pairs of two first bytes that share the last bit pass each other's
        // bytes crossed (`h` of one, `i` of another): the filter would let
        // most text through.
        let sh = SHAPES.as_ref().unwrap();
        assert!(sh.pairs.chosen <= LAST_PAIR_BIT + 1, "{} pairs", sh.pairs.chosen);
    }

    #[test]
    fn the_filter_never_misses_a_hint_the_automaton_finds_nor_a_separator() {
        let sh = SHAPES.as_ref().unwrap();
        let alphabet = b"abcdefghijklmnopqrstuvwxyzABEGKSXZ0123456789 =:-_/.~";
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut hits = 0;
        for len in 0..48_usize {
            for _ in 0..200 {
                let text: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        char::from(alphabet[(seed % alphabet.len() as u64) as usize])
                    })
                    .collect();
                let (may_hint, sep, _, _) = sh.pairs.prefilter(&text);
                if sh.hints.is_match(&text) {
                    hits += 1;
                    assert!(may_hint, "{text:?}");
                }
                assert_eq!(sep, text.contains(['=', ':']), "{text:?}");
            }
        }
        assert!(hits > 100, "the random texts held only {hits} hints");
    }

    #[test]
    fn prefilter_sees_separators_before_and_after_a_hint() {
        let sh = SHAPES.as_ref().unwrap();
        assert_eq!(sh.pairs.prefilter(""), (false, false, false, false));
        assert_eq!(sh.pairs.prefilter("="), (false, true, false, false));
        assert_eq!(sh.pairs.prefilter("plain words"), (false, false, false, false));
        assert_eq!(sh.pairs.prefilter("plain 1 2 words"), (false, false, false, false));
        assert_eq!(sh.pairs.prefilter("port 12"), (false, false, true, false));
        assert_eq!(sh.pairs.prefilter("a=b plain"), (false, true, false, false));
        assert_eq!(sh.pairs.prefilter("x: bearer abc"), (true, true, false, false));
        assert_eq!(sh.pairs.prefilter("bearer abc"), (true, false, false, false));
        assert_eq!(sh.pairs.prefilter("bearer abc key=v"), (true, true, false, false));
        assert_eq!(sh.pairs.prefilter("bearer abc http://h"), (true, true, false, false));
        assert_eq!(sh.pairs.prefilter("k\u{FF1D}v"), (false, true, false, false));
        assert_eq!(sh.pairs.prefilter("k\u{FF1A}v"), (false, true, false, false));
        for call in ["f(\"x\")", "f('x')", "f(\\\"x\\\")", "f( 'x' )"] {
            assert_eq!(sh.pairs.prefilter(call), (false, false, false, true), "{call}");
        }
        assert!(!sh.pairs.prefilter("f(x) (see below) applied changes").3);
    }

    #[test]
    fn private_key_blocks_keep_their_armour() {
        let body = "MIIEpAIBAAKCAQEA".repeat(8);
        for label in [
            "RSA PRIVATE KEY",
            "PRIVATE KEY",
            "EC PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ] {
            for nl in ["\n", "\r\n"] {
                let text = format!("log: -----BEGIN {label}-----{nl}{body}{nl}-----END {label}-----{nl}done");
                let out = redact(&text);
                assert_eq!(out, format!("log: -----BEGIN {label}-----{nl}***{nl}-----END {label}-----{nl}done"));
            }
        }
        let cut = format!("-----BEGIN RSA PRIVATE KEY-----\n{body}");
        assert_eq!(redact(&cut), "-----BEGIN RSA PRIVATE KEY-----\n***");
        assert_eq!(
            redact("-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----"),
            "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----"
        );
        let putty =
            "PuTTY-User-Key-File-3: ssh-ed25519\nPublic-Lines: 2\nAAAA\nPrivate-Lines: 1\nSECRETBODY\nPrivate-MAC: abc";
        assert!(!redact(putty).contains("SECRETBODY"));
    }

    #[test]
    fn url_scanner_agrees_with_the_regex_it_replaces() {
        // The regex the hand scanner replaced is the reference, on strings
        // built from the characters that decide a match.
        let reference = Regex::new(r#"//[^\s/?#:"'<>`]*:[^\s/?"'<>`]+@"#).unwrap();
        let pieces = [
            "//", "//", "//", ":", ":", ":", "@", "@", "@", "a", "a", "pw", "/", "#", "?", " ", "\"", "'", "<", ">",
            "`", "é", "\u{a0}", "\u{2028}", "\t", "x@y", "u:p@",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut matched = 0;
        for _ in 0..200_000 {
            let mut text = String::new();
            for _ in 0..(state % 14) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            state = state.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1);
            let expected: Vec<(usize, usize)> = reference
                .find_iter(&text)
                .map(|m| (m.start() + m.as_str().find(':').unwrap() + 1, m.end() - 1))
                .collect();
            let mut got = Vec::new();
            url_passwords(&text, &mut got);
            assert_eq!(got, expected, "{text:?}");
            matched += usize::from(!expected.is_empty());
        }
        assert!(matched > 5_000, "only {matched} strings held a URL password");
    }

    #[test]
    fn url_credentials_mask_only_the_password() {
        for (input, expected) in [
            ("https://u:p@h/x", "https://u:***@h/x"),
            ("postgres://svc:pw@db.internal:5432/app", "postgres://svc:***@db.internal:5432/app"),
            ("mongodb+srv://u:p@cluster0.example.net/", "mongodb+srv://u:***@cluster0.example.net/"),
            ("redis://:p@h:6379", "redis://:***@h:6379"),
            ("//u:p@h", "//u:***@h"),
            ("http://u:p%40ss@h", "http://u:***@h"),
            ("http://u:p@ss:w#rd@h/x", "http://u:***@h/x"),
            ("http://u:p@[::1]:8080/", "http://u:***@[::1]:8080/"),
            ("a https://a:b@h1/x and https://c:d@h2 z", "a https://a:***@h1/x and https://c:***@h2 z"),
            (
                r#"<a href="https://u:p@h">x</a><a href="https://v:q@k">"#,
                r#"<a href="https://u:***@h">x</a><a href="https://v:***@k">"#,
            ),
            ("https://user@example.com:pw@h/", "https://user@example.com:***@h/"),
        ] {
            assert_eq!(redact(input), expected, "{input}");
        }
        for plain in ["https://example.com/a@b", "https://h:8080/path", "mailto:a@example.com", "https://u@h/"] {
            assert_eq!(redact(plain), plain);
        }
    }

    #[test]
    fn auth_schemes_mask_the_credential() {
        assert_eq!(redact("Authorization: Bearer abc.def.ghi"), "Authorization: Bearer ***");
        assert_eq!(redact("sent Bearer eyJhbGciOi.x1 upstream"), "sent Bearer *** upstream");
        assert_eq!(redact("Authorization: Basic dXNlcjpwYXNz"), "Authorization: Basic ***");
        assert_eq!(redact("header Basic dXNlcjpwYXNz"), "header Basic ***");
        assert_eq!(redact("Authorization: Bearer "), "Authorization: Bearer ");
        assert_eq!(redact("Authorization: Bearer x"), "Authorization: Bearer ***");
        assert_eq!(redact("token Bearer abc-12345"), "token Bearer ***");
        for prose in ["Bearer token expired", "basic authentication is on", "token expired"] {
            assert_eq!(redact(prose), prose);
        }
    }

    #[test]
    fn jwts_and_token_formats_are_masked_whole() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_nature-1";
        assert_eq!(redact(&format!("t={jwt} ok")), "t=*** ok");
        assert_eq!(redact(&format!("got {jwt} ok")), "got *** ok");
        let tokens = [
            "AKIAIOSFODNN7EXAMPLE".to_owned(),
            "ASIAIOSFODNN7EXAMPLE".to_owned(),
            format!("ghp_{}", "a1".repeat(18)),
            format!("github_pat_{}", "A1_".repeat(28)),
            format!("glpat-{}", "x".repeat(20)),
            "xoxb-123456789012-abcdefghij".to_owned(),
            format!("sk_live_{}", "a1".repeat(12)),
            format!("rk_test_{}", "a1".repeat(12)),
            format!("whsec_{}", "a".repeat(32)),
            format!("sk-proj-{}", "Ab1".repeat(16)),
            format!("sk-ant-api03-{}", "Ab1_".repeat(20)),
            format!("AIza{}", "B".repeat(35)),
            format!("hf_{}", "a".repeat(34)),
            format!("npm_{}", "a".repeat(36)),
            format!("SG.{}.{}", "a".repeat(22), "b".repeat(43)),
            format!("hvs.{}", "a".repeat(24)),
            format!("ZXlK{}", "Q".repeat(60)),
        ];
        for t in &tokens {
            assert_eq!(redact(&format!("value {t} end")), "value *** end", "{t}");
        }
        assert_eq!(
            redact("hook https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX"),
            "hook https://hooks.slack.com/services/***"
        );
    }

    #[test]
    fn token_boundaries() {
        for keep in [
            "AKIAIOSFODNN7EXAMPL".to_owned(),
            "AKIAIOSFODNN7EXAMPLEX".to_owned(),
            format!("pk_live_{}", "a1".repeat(12)),
            format!("xghp_{}", "a1".repeat(17)),
            "123456789012345".to_owned(),
            "550e8400-e29b-41d4-a716-446655440000".to_owned(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709".to_owned(),
        ] {
            assert_eq!(redact(&keep), keep);
        }
        // Prefixes no word contains need no word start: after a URL-encoded `=`, or glued.
        let token = format!("ghp_{}", "a1".repeat(18));
        assert_eq!(redact(&format!("token%3D{token}&x")), "token%3D***&x");
        assert_eq!(redact(&format!("{token}{token}")), "******");
        for word in [format!("task-{}", "a".repeat(24)), "boxapp-production-server-01".to_owned()] {
            assert_eq!(redact(&word), word);
        }
    }

    #[test]
    fn key_value_pairs_in_free_text() {
        for (input, expected) in [
            ("login failed for password=hunter2", "login failed for password=***"),
            ("--db-password hunter2 --verbose", "--db-password *** --verbose"),
            ("--db-password=hunter2", "--db-password=***"),
            ("PASSWORD=x\nHOME=/root", "PASSWORD=***\nHOME=/root"),
            ("password: hunter2", "password: ***"),
            ("Server=db;User Id=sa;Password=p@ss;Encrypt=true", "Server=db;User Id=sa;Password=***;Encrypt=true"),
            ("Server=db;Pwd=x;", "Server=db;Pwd=***;"),
            ("AccountName=a;AccountKey=abc+/d==;EndpointSuffix=x", "AccountName=a;AccountKey=***;EndpointSuffix=x"),
            (
                "https://h/x?access_token=abc&X-Amz-Signature=def&page=2",
                "https://h/x?access_token=***&X-Amz-Signature=***&page=2",
            ),
            ("Cookie: sessionid=abc; csrftoken=def; theme=dark", "Cookie: sessionid=***; csrftoken=***; theme=dark"),
            (r#"{"user": "bob", "password": "x\"y"}"#, r#"{"user": "bob", "password": "***"}"#),
            ("{'api_key': 'k1'}", "{'api_key': '***'}"),
            ("note: password=x", "note: password=***"),
            ("password=${DB_PASSWORD}", "password=${DB_PASSWORD}"),
            ("password=$DB_PASSWORD", "password=$DB_PASSWORD"),
            ("password_set: true", "password_set: true"),
            ("max_tokens=300 author=alice", "max_tokens=300 author=alice"),
            ("time 12:30:00 key: value", "time 12:30:00 key: value"),
            ("Creds(password=['a', 'b]'], user='bob')", "Creds(password=***, user='bob')"),
            ("secrets={\"a\": (1, 2)} next=1", "secrets=*** next=1"),
            ("token=[never closed, x", "token=***"),
            ("password\u{FF1D}hunter2 user\u{FF1A}bob", "password\u{FF1D}*** user\u{FF1A}bob"),
            ("password\u{FF1A}\u{3000}hunter2\u{FF0C}ok", "password\u{FF1A}\u{3000}***"),
        ] {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn header_heredoc_and_dsn_scans_stop_at_their_edges() {
        // A quoted parameter cut off at its line's end does not run into the next line.
        assert_eq!(redact("Authorization: Digest response=\"abc\nHost: h"), "Authorization: Digest ***\nHost: h");
        assert_eq!(redact("authorization: SSWS tok\u{e9}n1, next"), "authorization: SSWS ***");
        // A quoted heredoc word followed by a multi-byte character is no heredoc, and no panic.
        let odd = "password = <<\"EOF\u{e9}\nx\nEOF";
        assert_eq!(redact(odd), odd);
        assert_eq!(redact("password = <<'EOF'\nx\nEOF\nnext=1"), "password = <<'EOF'\n***\nEOF\nnext=1");
        for text in ["\u{e9}".repeat(300) + "x:pw@tcp(h)", "@tcp(".into(), ":@tcp(".into(), "a:@unix(".into()] {
            let once = redact(&text);
            assert_eq!(redact(&once), once);
        }
        assert!(!redact(&("\u{e9}".repeat(300) + "x:pw@tcp(h)")).contains("pw"));
        // Every byte offset of a text full of the new shapes' delimiters.
        let text = "Authorization: Bot a\u{e9},b=\"\u{e9}\" <<\"\u{e9} jdbc:oracle:thin:\u{e9}/\u{e9}@h u:\u{e9}@tcp(";
        for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            redact(&text[..cut]);
            redact(&text[cut..]);
        }
    }

    #[test]
    fn applying_is_idempotent() {
        for input in [
            "password=hunter2 https://u:p@h Bearer abc.def.ghi",
            "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----",
        ] {
            let once = redact(input);
            assert_eq!(redact(&once), once);
        }
    }

    #[test]
    fn long_runs_stay_linear() {
        let spaces = " ".repeat(100_000);
        assert_eq!(redact(&spaces), spaces);
        let s = format!("{}password=x{}", "a=b ".repeat(50_000), " ".repeat(10));
        assert!(redact(&s).ends_with("password=***          "));
        // Name fields whose values never end: each is read from a bounded window.
        let names = "key='".repeat(50_000) + " new_value=x";
        assert_eq!(redact(&names), names);
        let named = format!("{}key=api_key new_value=x", "name=[ ".repeat(50_000));
        assert!(redact(&named).ends_with("new_value=***"));
        // A long token full of other tokens' hints: each hint is probed in a
        // bounded window, not by a search over the rest of the text.
        let hinted = format!("glpat-{} end", "asiadapi".repeat(20_000));
        assert_eq!(redact(&hinted), "*** end");
        // A long line full of `password: x` pairs, each looked at for a YAML block.
        let line = "password: x ".repeat(50_000);
        assert_eq!(redact(&line), "password: *** ".repeat(50_000));
        let padded = format!("password:{}\n  Yb1pass\nuser: bob", " ".repeat(500));
        assert!(!redact(&padded).contains("Yb1pass"));
        let blocks = "password: |x ".repeat(50_000);
        assert!(!redact(&blocks).contains("|x"));
    }
}
