use super::*;
use iscsi::ChapSecret;

const T1: &str = "iqn.2026-11.test:t1";
const T2: &str = "iqn.2026-11.test:t2";

fn chap() -> Arc<ChapConfig> {
    Arc::new(ChapConfig {
        initiator: iscsi::ChapCredentials {
            name: "u".into(),
            secret: ChapSecret::new("0123456789ab"),
        },
        target: None,
        algorithms: vec![iscsi::ChapAlgorithm::Md5],
    })
}

fn acl() -> AccessControl {
    let mut targets = HashMap::new();
    targets.insert(
        T1.to_string(),
        TargetAccess {
            initiators: vec!["iqn.2026-11.test:good".into()],
            networks: vec![
                IpNetwork::parse("127.0.0.0/8").unwrap(),
                IpNetwork::parse("::1/128").unwrap(),
            ],
            chap: Some(chap()),
        },
    );
    targets.insert(
        T2.to_string(),
        TargetAccess {
            initiators: vec![],
            networks: vec![],
            chap: None,
        },
    );
    AccessControl {
        targets,
        discovery_chap: Some(chap()),
        log: Arc::new(RateLimiter::new(LOG_INTERVAL, LOG_MAX_PER_INTERVAL)),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn initiator_and_network_lists() {
    let a = acl();
    assert_eq!(
        a.allows(T1, "iqn.2026-11.test:good", ip("127.0.0.1")),
        Ok(())
    );
    // iqn names compare case-insensitively (normalised).
    assert_eq!(a.allows(T1, "IQN.2026-11.TEST:GOOD", ip("::1")), Ok(()));
    assert_eq!(
        a.allows(T1, "iqn.2026-11.test:bad", ip("127.0.0.1")),
        Err("initiator not in allowed_initiators")
    );
    assert_eq!(
        a.allows(T1, "not a name", ip("127.0.0.1")),
        Err("initiator not in allowed_initiators")
    );
    assert_eq!(
        a.allows(T1, "iqn.2026-11.test:good", ip("192.0.2.1")),
        Err("source address not in allowed_networks")
    );
    assert_eq!(
        a.allows(T1, "iqn.2026-11.test:good", ip("::ffff:127.0.0.9")),
        Ok(())
    );
    assert_eq!(a.allows(T2, "iqn.x:any", ip("192.0.2.1")), Ok(()));
}

fn info(kind: SessionType, target: Option<&str>) -> LoginInfo {
    LoginInfo {
        initiator_name: "iqn.2026-11.test:good".into(),
        initiator_alias: None,
        isid: [0; 6],
        tsih: 0,
        cid: 0,
        target_name: target.map(str::to_string),
        session_type: kind,
    }
}

#[test]
fn authenticators_per_target_and_discovery() {
    let a = acl();
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let t1 = a.authenticator(&info(SessionType::Normal, Some(T1)), peer);
    assert_eq!(t1.map(|x| x.method().to_string()).as_deref(), Some("CHAP"));
    assert!(a
        .authenticator(&info(SessionType::Normal, Some(T2)), peer)
        .is_none());
    assert!(a
        .authenticator(&info(SessionType::Discovery, None), peer)
        .is_some());
    assert!(AccessControl::open()
        .authenticator(&info(SessionType::Discovery, None), peer)
        .is_none());
    let refused = info(SessionType::Normal, Some(T1));
    let far: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    assert_eq!(
        a.check_login(&refused, far),
        Err(LoginRejection::AuthorizationFailure)
    );
    assert_eq!(a.check_login(&refused, peer), Ok(()));
}
