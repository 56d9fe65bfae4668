//! The built component, checked by the real Steadfast engine as a server checks a deploy.
//! (The activities' own logic is tested as plain functions in `src/lib.rs`.)

use steadfast_testkit::TestEnv;

#[test]
fn the_component_deploys_with_its_activities() -> steadfast_testkit::Result<()> {
    let env = TestEnv::new()?;
    let deployment = env.deploy(&steadfast_testkit::this_crate!()?)?;
    assert_eq!(deployment.names, ["send_approval_request"]);
    Ok(())
}
