//! oned's documents: the base64 `DS_DRIVER_ACTION_DATA` on a datastore action's
//! stdin, and the XML of an XML-RPC answer. They must return, never panic,
//! whatever the input (garbage, truncation, entities, depth).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbdx_one::action_data::ActionData;
use rbdx_one::xml::Element;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(doc) = Element::parse(&text) {
        let _ = doc.text_at("TEMPLATE/DISK/SOURCE");
        let _ = doc.children_named("DISK").count();
    }
    if let Ok(ad) = ActionData::decode(&text) {
        let _ = ad.datastore();
        let _ = ad.image();
        let _ = ad.text("IMAGE/SOURCE");
    }
    let b64 = rbdx_one::base64::encode(data);
    assert_eq!(rbdx_one::base64::decode(&b64).as_deref(), Some(data), "base64 round trip");
    let _ = ActionData::decode(&b64);
});
