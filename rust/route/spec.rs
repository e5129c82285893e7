//! What a route is asked to be: the spec types the bindings fill in.

/// An output of a route spec: its URI and an optional id (`out0`, `out1`, … when absent).
#[derive(Debug, Clone, Default)]
pub struct OutputSpec {
    pub uri: String,
    pub id: Option<String>,
}

/// An input of a route spec: its URI (`standby=cold` to connect it only when needed) and an
/// optional id (`in0`, `in1`, … when absent).
#[derive(Debug, Clone, Default)]
pub struct InputSpec {
    pub uri: String,
    pub id: Option<String>,
}

/// How a route chooses between its inputs; `None` fields take the defaults.
#[derive(Debug, Clone, Default)]
pub struct SwitchSpec {
    pub loss_timeout_ms: Option<u64>,
    pub failback_after_ms: Option<u64>,
    /// Send a generated slate when every input is lost (default on).
    pub slate: Option<bool>,
    /// The slate's picture size; else that of the input on air (from its H.264 SPS), else
    /// 1280x720.
    pub slate_size: Option<(u32, u32)>,
}

/// What a route is made of.
#[derive(Debug, Clone, Default)]
pub struct RouteSpec {
    pub name: String,
    /// Inputs in priority order (the first is preferred).
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    /// Per-output queue bound in bytes; `None` for the default.
    pub queue_bytes: Option<u64>,
    pub switch: SwitchSpec,
}
