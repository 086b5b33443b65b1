//! `rewind loadtest gen` against a real simulator: the generated tenant is served over Graph,
//! and a second run with the same seed refills it without duplicating anything.

use rewind_loadtest::gen::{run, GenConfig};
use rewind_loadtest::tenant::{TenantGenerator, TenantSpec};

use crate::dirsim::support::Sim;

fn count(sim: &Sim, tenant: &str, collection: &str) -> usize {
    let client = sim.client(tenant);
    let mut next = Some(format!("/{collection}?$top=999&$select=id"));
    let mut n = 0;
    while let Some(path) = next {
        let page = client.get(&path);
        assert_eq!(page.status, 200, "{:?}", page.body);
        n += page.values().len();
        next = page.next_link();
    }
    n
}

#[test]
fn generates_a_tenant_into_the_simulator_and_refills_it() {
    let sim = Sim::start();
    let config = GenConfig {
        dirsim: sim.base.clone(),
        tenant: "gen".into(),
        objects: 3_000,
        seed: 5,
        client_id: Some("app-gen".into()),
        client_secret: Some("secret-gen".into()),
    };
    let first = run(&config).unwrap();
    assert!(first.created_tenant);
    assert_eq!(first.objects, 3_000);
    assert_eq!(first.graph_base_url, format!("{}/gen/v1.0", sim.base));
    let generator = TenantGenerator::new(TenantSpec::new(3_000, 5));
    let layout = generator.type_layout();
    assert_eq!(count(&sim, "gen", "users"), layout.users as usize);
    assert_eq!(count(&sim, "gen", "groups"), layout.groups as usize);
    assert_eq!(count(&sim, "gen", "servicePrincipals"), layout.sps as usize);

    let again = run(&config).unwrap();
    assert!(!again.created_tenant);
    assert_eq!(count(&sim, "gen", "users"), layout.users as usize);

    let bad = run(&GenConfig {
        dirsim: "ftp://nowhere".into(),
        ..config
    });
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("must start with http"));
}
