//! CHAP tests: known answers (computed outside this crate with Python's hashlib), whole
//! exchanges through the login state machine, every refusal, and a property test that
//! arbitrary key sets never panic.

use std::sync::Arc;

use bytes::Bytes;
use md5::Md5;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::config::{Limits, LoginPolicy, ServerConfig, SessionType, TargetConfig};
use crate::login::{Login, LoginStep};
use crate::pdu::LoginRequest;

const TARGET: &str = "iqn.2024-01.org.example:disk1";
const USER: &str = "pve-user";
const SECRET: &[u8] = b"secret-of-12+";
const TSECRET: &[u8] = b"target-secret-34";

fn random() -> [u8; CHAP_RANDOM_LEN] {
    let mut r = [0u8; CHAP_RANDOM_LEN];
    for (i, b) in r.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    r
}

fn config(algs: &[ChapAlgorithm], mutual: bool) -> Arc<ChapConfig> {
    Arc::new(ChapConfig {
        initiator: ChapCredentials {
            name: USER.into(),
            secret: ChapSecret::new(SECRET),
        },
        target: mutual.then(|| ChapCredentials {
            name: TARGET.into(),
            secret: ChapSecret::new(TSECRET),
        }),
        algorithms: algs.to_vec(),
    })
}

fn both() -> Vec<ChapAlgorithm> {
    vec![ChapAlgorithm::Sha256, ChapAlgorithm::Md5]
}

fn info() -> LoginInfo {
    LoginInfo {
        initiator_name: "iqn.1993-08.org.debian:01:abc".into(),
        initiator_alias: None,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        cid: 0,
        target_name: Some(TARGET.into()),
        session_type: SessionType::Normal,
    }
}

fn pairs(kv: &[(&str, &str)]) -> Vec<Pair> {
    kv.iter()
        .map(|(k, v)| Pair {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect()
}

fn get(keys: &[(String, String)], k: &str) -> String {
    keys.iter()
        .find(|(a, _)| a == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{k} missing in {keys:?}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 1994 §4.1, computed with the digest crates directly (not through `algo`).
fn rfc1994(alg: ChapAlgorithm, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut input = vec![id];
    input.extend_from_slice(secret);
    input.extend_from_slice(challenge);
    match alg {
        ChapAlgorithm::Md5 => Md5::digest(&input).to_vec(),
        ChapAlgorithm::Sha256 => Sha256::digest(&input).to_vec(),
    }
}

/// Runs CHAP_A then returns (keys sent by the target, authenticator).
fn challenge(cfg: Arc<ChapConfig>, offer: &str) -> (Vec<(String, String)>, ChapAuthenticator) {
    let mut a = ChapAuthenticator::new(cfg, random());
    match a.step(&info(), &pairs(&[("CHAP_A", offer)])).unwrap() {
        AuthStep::Continue(k) => (k, a),
        other => panic!("{other:?}"),
    }
}

fn id_and_challenge(k: &[(String, String)]) -> (u8, Vec<u8>) {
    let id: u8 = get(k, "CHAP_I").parse().unwrap();
    let c = get(k, "CHAP_C");
    (id, unhex(c.strip_prefix("0x").unwrap()))
}

#[test]
fn known_answers() {
    let c16: Vec<u8> = (0..16).collect();
    let c32: Vec<u8> = (0..32).collect();
    assert_eq!(
        hex(&ChapAlgorithm::Md5.response(7, SECRET, &c16)),
        "46cf272ee92ef37fbc16932e344d191c"
    );
    assert_eq!(
        hex(&ChapAlgorithm::Sha256.response(200, b"another-secret!", &c32)),
        "5b4fd80163c74d337a2a4236c66a43941beaf62714c0e167434bf091c89bba6a"
    );
    assert_eq!(
        ChapAlgorithm::Md5.response(7, SECRET, &c16),
        rfc1994(ChapAlgorithm::Md5, 7, SECRET, &c16)
    );
}

#[test]
fn strongest_allowed_algorithm_is_chosen() {
    for (allowed, offer, want) in [
        (both(), "5", 5),
        (both(), "7", 7),
        (both(), "5,7", 7),
        (both(), "7,5", 7),
        (both(), "6,5,8", 5),
        (vec![ChapAlgorithm::Md5], "7,5", 5),
        (vec![ChapAlgorithm::Sha256], "5,7", 7),
    ] {
        let (k, a) = challenge(config(&allowed, false), offer);
        assert_eq!(get(&k, "CHAP_A"), want.to_string(), "{offer}");
        let (_, c) = id_and_challenge(&k);
        let alg = a.algorithm().unwrap();
        assert_eq!(alg.code(), want);
        assert_eq!(c.len(), alg.challenge_len());
        assert!(c.len() >= 16);
    }
}

#[test]
fn no_common_algorithm_is_refused() {
    for (allowed, offer) in [
        (vec![ChapAlgorithm::Sha256], "5"),
        (both(), "6,8"),
        (both(), "x"),
        (both(), ""),
    ] {
        let mut a = ChapAuthenticator::new(config(&allowed, false), random());
        let r = a.step(&info(), &pairs(&[("CHAP_A", offer)]));
        assert_eq!(r, Err(LoginRejection::AuthenticationFailure), "{offer}");
        assert!(matches!(
            a.failure(),
            Some(ChapFailure::NoCommonAlgorithm(_))
        ));
    }
}

fn respond(
    a: &mut ChapAuthenticator,
    extra: &[(&str, &str)],
    name: &str,
    r: &str,
) -> Result<AuthStep, LoginRejection> {
    let mut kv = vec![("CHAP_N", name), ("CHAP_R", r)];
    kv.extend_from_slice(extra);
    a.step(&info(), &pairs(&kv))
}

#[test]
fn one_way_md5_and_sha256_hex_and_base64() {
    use base64::Engine;
    for (offer, alg) in [("5", ChapAlgorithm::Md5), ("7", ChapAlgorithm::Sha256)] {
        for b64 in [false, true] {
            let (k, mut a) = challenge(config(&both(), false), offer);
            let (id, c) = id_and_challenge(&k);
            let r = rfc1994(alg, id, SECRET, &c);
            let enc = if b64 {
                format!("0b{}", base64::engine::general_purpose::STANDARD.encode(&r))
            } else {
                format!("0X{}", hex(&r).to_uppercase())
            };
            assert_eq!(respond(&mut a, &[], USER, &enc), Ok(AuthStep::Done(vec![])));
            assert!(a.succeeded());
        }
    }
}

#[test]
fn wrong_secret_name_or_malformed_response_fail() {
    let (k, a0) = challenge(config(&both(), false), "5");
    drop(a0);
    let (id, c) = id_and_challenge(&k);
    let good = format!("0x{}", hex(&rfc1994(ChapAlgorithm::Md5, id, SECRET, &c)));
    let bad = format!(
        "0x{}",
        hex(&rfc1994(ChapAlgorithm::Md5, id, b"secret-of-12-", &c))
    );
    let cases: Vec<(&str, String, ChapFailure)> = vec![
        (USER, bad, ChapFailure::WrongResponse),
        ("other-user", good.clone(), ChapFailure::WrongName),
        (USER, "0x1234".into(), ChapFailure::MalformedResponse),
        (USER, "1234".into(), ChapFailure::MalformedResponse),
        (USER, "0xzz".into(), ChapFailure::MalformedResponse),
        (USER, format!("{good}00"), ChapFailure::MalformedResponse),
    ];
    for (name, r, why) in cases {
        let (_, mut a) = challenge(config(&both(), false), "5");
        assert_eq!(
            respond(&mut a, &[], name, &r),
            Err(LoginRejection::AuthenticationFailure)
        );
        assert_eq!(a.failure(), Some(&why));
    }
    // And the good one passes, so the cases above fail for the stated reason only.
    let (_, mut a) = challenge(config(&both(), false), "5");
    assert!(respond(&mut a, &[], USER, &good).is_ok());
}

#[test]
fn mutual_answer_is_the_targets_response() {
    for (offer, alg) in [("5", ChapAlgorithm::Md5), ("7", ChapAlgorithm::Sha256)] {
        let (k, mut a) = challenge(config(&both(), true), offer);
        let (id, c) = id_and_challenge(&k);
        let r = format!("0x{}", hex(&rfc1994(alg, id, SECRET, &c)));
        let ic: Vec<u8> = (100..132).collect();
        let step = respond(
            &mut a,
            &[("CHAP_I", "0x2a"), ("CHAP_C", &format!("0x{}", hex(&ic)))],
            USER,
            &r,
        )
        .unwrap();
        let AuthStep::Done(keys) = step else {
            panic!("{step:?}")
        };
        assert_eq!(get(&keys, "CHAP_N"), TARGET);
        let want = rfc1994(alg, 42, TSECRET, &ic);
        assert_eq!(get(&keys, "CHAP_R"), format!("0x{}", hex(&want)));
    }
}

#[test]
fn mutual_refusals() {
    let run = |cfg: Arc<ChapConfig>, i: &str, c: Option<&str>| {
        let (k, mut a) = challenge(cfg, "5");
        let (id, ch) = id_and_challenge(&k);
        let r = format!("0x{}", hex(&rfc1994(ChapAlgorithm::Md5, id, SECRET, &ch)));
        let own = format!("0x{}", hex(&ch));
        let c = c.map(str::to_string).unwrap_or(own);
        let res = respond(&mut a, &[("CHAP_I", i), ("CHAP_C", &c)], USER, &r);
        assert_eq!(res, Err(LoginRejection::AuthenticationFailure));
        a.failure().cloned()
    };
    let other = Some("0x0102030405060708090a0b0c0d0e0f10");
    assert_eq!(
        run(config(&both(), true), "1", None),
        Some(ChapFailure::ReflectedChallenge)
    );
    assert_eq!(
        run(config(&both(), false), "1", other),
        Some(ChapFailure::MutualNotConfigured)
    );
    for (i, c) in [
        ("256", other),
        ("x", other),
        ("1", Some("0x")),
        ("1", Some("abc")),
    ] {
        assert_eq!(
            run(config(&both(), true), i, c),
            Some(ChapFailure::MalformedMutualChallenge),
            "{i} {c:?}"
        );
    }
    let same = Arc::new(ChapConfig {
        target: Some(ChapCredentials {
            name: TARGET.into(),
            secret: ChapSecret::new(SECRET),
        }),
        ..(*config(&both(), false)).clone()
    });
    assert_eq!(run(same, "1", other), Some(ChapFailure::SameSecrets));
    // CHAP_I without CHAP_C.
    let (k, mut a) = challenge(config(&both(), true), "5");
    let (id, ch) = id_and_challenge(&k);
    let r = format!("0x{}", hex(&rfc1994(ChapAlgorithm::Md5, id, SECRET, &ch)));
    assert!(respond(&mut a, &[("CHAP_I", "3")], USER, &r).is_err());
    assert_eq!(a.failure(), Some(&ChapFailure::MalformedMutualChallenge));
}

#[test]
fn out_of_sequence_keys_fail() {
    let mut a = ChapAuthenticator::new(config(&both(), false), random());
    assert!(a
        .step(&info(), &pairs(&[("CHAP_N", USER), ("CHAP_R", "0x00")]))
        .is_err());
    let (_, mut a) = challenge(config(&both(), false), "5");
    assert!(a.step(&info(), &pairs(&[("CHAP_A", "5")])).is_err());
    // Only the first step may be empty; unknown CHAP keys are answered NotUnderstood.
    let mut a = ChapAuthenticator::new(config(&both(), false), random());
    assert_eq!(a.step(&info(), &[]), Ok(AuthStep::Continue(vec![])));
    let mut b = ChapAuthenticator::new(config(&both(), false), random());
    assert_eq!(b.step(&info(), &[]), Ok(AuthStep::Continue(vec![])));
    assert!(b.step(&info(), &[]).is_err());
    let (_, mut c) = challenge(config(&both(), false), "5");
    assert!(c.step(&info(), &[]).is_err());
    assert_eq!(c.failure(), Some(&ChapFailure::MissingResponse));
    let AuthStep::Continue(k) = a
        .step(&info(), &pairs(&[("CHAP_A", "5"), ("CHAP_X", "1")]))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(get(&k, "CHAP_X"), "NotUnderstood");
}

#[test]
fn encodings() {
    assert_eq!(decode_binary("0x0a0B"), Some(vec![10, 11]));
    assert_eq!(decode_binary("0xabc"), Some(vec![0x0a, 0xbc]));
    assert_eq!(decode_binary("0bAQID"), Some(vec![1, 2, 3]));
    assert_eq!(decode_binary("0BAQIDBA=="), Some(vec![1, 2, 3, 4]));
    assert_eq!(decode_binary("0BAQIDBA"), Some(vec![1, 2, 3, 4]));
    for bad in ["", "0x", "0b", "12", "0xg0", "0b!!", "x0"] {
        assert_eq!(decode_binary(bad), None, "{bad}");
    }
    let long = format!("0x{}", "00".repeat(MAX_BINARY_LEN + 1));
    assert_eq!(decode_binary(&long), None);
    assert_eq!(decode_identifier("0"), Some(0));
    assert_eq!(decode_identifier("255"), Some(255));
    assert_eq!(decode_identifier("0xff"), Some(255));
    assert_eq!(decode_identifier("0x00ff"), Some(255));
    for bad in ["256", "-1", "", "0x", "0x100", "1a", "0001"] {
        assert_eq!(decode_identifier(bad), None, "{bad}");
    }
    assert_eq!(encode_hex(&[0, 255]), "0x00ff");
}

#[test]
fn secrets_are_redacted() {
    let cfg = config(&both(), true);
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("secret-of-12+"), "{shown}");
    assert!(!shown.contains("target-secret"), "{shown}");
    assert!(shown.contains("<redacted>"));
    let a = ChapAuthenticator::new(cfg, random());
    assert!(!format!("{a:?}").contains("secret"));
}

// ----- through the login state machine -----

struct ChapPolicy(Arc<ChapConfig>);
impl LoginPolicy for ChapPolicy {
    fn check(&self, _req: &LoginInfo) -> Result<u16, LoginRejection> {
        Ok(3)
    }
    fn authenticator(&self, _req: &LoginInfo) -> Option<Box<dyn Authenticator>> {
        Some(Box::new(ChapAuthenticator::new(self.0.clone(), random())))
    }
}

fn server() -> Arc<ServerConfig> {
    Arc::new(ServerConfig {
        targets: vec![TargetConfig {
            name: TARGET.into(),
            alias: None,
            tpgt: 1,
            portals: vec!["192.0.2.1:3260".into()],
        }],
        limits: Limits::default(),
    })
}

fn login_req(transit: bool, nsg: u8, keys: &[String]) -> LoginRequest {
    let mut data = Vec::new();
    for k in keys {
        data.extend_from_slice(k.as_bytes());
        data.push(0);
    }
    LoginRequest {
        transit,
        cont: false,
        csg: 0,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
        data: Bytes::from(data),
    }
}

fn reply_keys(step: &LoginStep) -> Vec<(String, String)> {
    let r = match step {
        LoginStep::Reply(r) | LoginStep::Complete(r, _) | LoginStep::Fail(r) => r,
    };
    crate::text::parse(&r.data)
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect()
}

/// open-iscsi's sequence; `secret` is what the initiator uses. Returns the final step.
fn open_iscsi_login(offer: &str, secret: &[u8]) -> LoginStep {
    let policy = ChapPolicy(config(&both(), false));
    let mut login = Login::new(server());
    let s = |v: &str| v.to_string();
    let first = [
        s("InitiatorName=iqn.1993-08.org.debian:01:abc"),
        format!("TargetName={TARGET}"),
        s("SessionType=Normal"),
        s("AuthMethod=CHAP,None"),
    ];
    let step = login.handle(&login_req(true, 1, &first), &policy, None);
    assert!(
        matches!(step, LoginStep::Reply(ref r) if !r.transit),
        "{step:?}"
    );
    assert_eq!(reply_keys(&step)[1..], [(s("AuthMethod"), s("CHAP"))]);
    let step = login.handle(
        &login_req(false, 1, &[format!("CHAP_A={offer}")]),
        &policy,
        None,
    );
    let k = reply_keys(&step);
    let (id, c) = id_and_challenge(&k);
    let alg = ChapAlgorithm::from_code(get(&k, "CHAP_A").parse().unwrap()).unwrap();
    let r = hex(&rfc1994(alg, id, secret, &c));
    login.handle(
        &login_req(
            true,
            1,
            &[format!("CHAP_N={USER}"), format!("CHAP_R=0x{r}")],
        ),
        &policy,
        None,
    )
}

#[test]
fn login_with_chap() {
    let step = open_iscsi_login("7,5", SECRET);
    match step {
        LoginStep::Reply(r) => assert!(r.transit && r.nsg == 1 && r.status_class == 0),
        other => panic!("{other:?}"),
    }
    match open_iscsi_login("5", b"not-the-secret") {
        LoginStep::Fail(r) => assert_eq!((r.status_class, r.status_detail), (2, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn login_without_chap_is_refused() {
    let policy = ChapPolicy(config(&both(), false));
    for (auth, transit_first) in [("AuthMethod=None", true), ("AuthMethod=CHAP,None", false)] {
        let mut login = Login::new(server());
        let keys = [
            "InitiatorName=iqn.x:y".to_string(),
            format!("TargetName={TARGET}"),
            auth.to_string(),
        ];
        let mut step = login.handle(&login_req(transit_first, 1, &keys), &policy, None);
        if !transit_first {
            // CHAP chosen; now try to leave the security stage without the exchange.
            step = login.handle(&login_req(true, 1, &[]), &policy, None);
        }
        match step {
            LoginStep::Fail(r) => assert_eq!((r.status_class, r.status_detail), (2, 1), "{auth}"),
            other => panic!("{auth}: {other:?}"),
        }
    }
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("CHAP_A".to_string()),
        Just("CHAP_I".to_string()),
        Just("CHAP_C".to_string()),
        Just("CHAP_N".to_string()),
        Just("CHAP_R".to_string()),
        "CHAP_[A-Z]{1,3}",
    ]
}

fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("5".to_string()),
        Just("7".to_string()),
        Just("5,7".to_string()),
        Just(USER.to_string()),
        "0[xXbB][0-9a-fA-F+/=]{0,80}",
        "[0-9]{0,4}",
        ".{0,40}",
    ]
}

proptest! {
    #[test]
    fn arbitrary_key_sets_never_panic(
        steps in proptest::collection::vec(
            proptest::collection::vec((arb_key(), arb_value()), 0..6), 1..5),
        mutual in any::<bool>(),
    ) {
        let mut a = ChapAuthenticator::new(config(&both(), mutual), random());
        for kv in steps {
            let ps: Vec<Pair> = kv.into_iter().map(|(key, value)| Pair { key, value }).collect();
            match a.step(&info(), &ps) {
                Ok(AuthStep::Done(_)) => prop_assert!(a.succeeded()),
                Ok(AuthStep::Continue(_)) => {}
                Err(e) => {
                    prop_assert_eq!(e, LoginRejection::AuthenticationFailure);
                    prop_assert!(a.failure().is_some());
                }
            }
        }
    }

    #[test]
    fn binary_decoding_never_panics(s in ".{0,100}") {
        let _ = decode_binary(&s);
        let _ = decode_identifier(&s);
    }
}
