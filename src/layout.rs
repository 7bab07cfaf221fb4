//! Every host path imv creates, in one place.
