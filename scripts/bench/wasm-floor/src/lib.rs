//! Pauses at the headers, reads nothing until the end of the body, then continues. With the
//! plugin configuration `hmac` it also reads the body and computes an HMAC-SHA256 over it,
//! the least work any signature-verifying filter must do.

use hmac::Mac;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { hmac: false }) });
}}

struct Root {
    hmac: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        self.hmac = self.get_plugin_configuration().is_some_and(|c| c.starts_with(b"hmac"));
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor { hmac: self.hmac }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    hmac: bool,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if self.hmac {
            let body = self.get_http_request_body(0, size).unwrap_or_default();
            let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"benchmark-key") else {
                return Action::Continue;
            };
            mac.update(&body);
            // Use the result so the work cannot be optimised away.
            if mac.finalize().into_bytes()[0] == 0 && size == usize::MAX {
                return Action::Pause;
            }
        }
        Action::Continue
    }
}
