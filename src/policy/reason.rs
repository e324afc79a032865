//! The one closed list of outcomes: each feeds the Reply-Message, the log line and the
//! metric label, so the three never disagree.

/// Why a request was answered the way it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Accepted,
    NoAuthSource,
    UnknownUser,
    BadPassword,
    NoPassword,
    MissingUserName,
    InvalidUserName,
    MissingPassword,
    MalformedPassword,
    InternalError,
    DeviceNotAssigned,
    DeviceDisabled,
    DeviceIdMismatch,
    NoDeviceId,
    PlatformMismatch,
    DeviceRegistered,
    SerialInUse,
    NoFreeDeviceSlot,
    ProxyNotApplied,
    PoolExhausted,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::Accepted,
        Reason::NoAuthSource,
        Reason::UnknownUser,
        Reason::BadPassword,
        Reason::NoPassword,
        Reason::MissingUserName,
        Reason::InvalidUserName,
        Reason::MissingPassword,
        Reason::MalformedPassword,
        Reason::InternalError,
        Reason::DeviceNotAssigned,
        Reason::DeviceDisabled,
        Reason::DeviceIdMismatch,
        Reason::NoDeviceId,
        Reason::PlatformMismatch,
        Reason::DeviceRegistered,
        Reason::SerialInUse,
        Reason::NoFreeDeviceSlot,
        Reason::ProxyNotApplied,
        Reason::PoolExhausted,
    ];

    /// The Reply-Message text.
    pub fn message(self) -> &'static str {
        match self {
            Reason::Accepted => "accepted",
            Reason::NoAuthSource => "no authentication source selected",
            Reason::UnknownUser => "unknown user",
            Reason::BadPassword => "bad password",
            Reason::NoPassword => "no password set for this user",
            Reason::MissingUserName => "missing user name",
            Reason::InvalidUserName => "invalid user name",
            Reason::MissingPassword => "missing password (only PAP is supported)",
            Reason::MalformedPassword => "malformed password attribute",
            Reason::InternalError => "internal error",
            Reason::DeviceNotAssigned => "device not assigned",
            Reason::DeviceDisabled => "device disabled",
            Reason::DeviceIdMismatch => "device id mismatch",
            Reason::NoDeviceId => "no device id presented",
            Reason::PlatformMismatch => "device platform does not match the device type",
            Reason::DeviceRegistered => "device registered: reconnect to start the VPN session",
            Reason::SerialInUse => "device id already registered to another device",
            Reason::NoFreeDeviceSlot => "no free device slot to register this device",
            Reason::ProxyNotApplied => "proxy not applied to this profile",
            Reason::PoolExhausted => "address pool exhausted",
        }
    }

    /// The metric label and log field.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Accepted => "accepted",
            Reason::NoAuthSource => "no_auth_source",
            Reason::UnknownUser => "unknown_user",
            Reason::BadPassword => "bad_password",
            Reason::NoPassword => "no_password",
            Reason::MissingUserName => "missing_user_name",
            Reason::InvalidUserName => "invalid_user_name",
            Reason::MissingPassword => "missing_password",
            Reason::MalformedPassword => "malformed_password",
            Reason::InternalError => "internal_error",
            Reason::DeviceNotAssigned => "device_not_assigned",
            Reason::DeviceDisabled => "device_disabled",
            Reason::DeviceIdMismatch => "device_id_mismatch",
            Reason::NoDeviceId => "no_device_id",
            Reason::PlatformMismatch => "platform_mismatch",
            Reason::DeviceRegistered => "device_registered",
            Reason::SerialInUse => "serial_in_use",
            Reason::NoFreeDeviceSlot => "no_free_device_slot",
            Reason::ProxyNotApplied => "proxy_not_applied",
            Reason::PoolExhausted => "pool_exhausted",
        }
    }
}
