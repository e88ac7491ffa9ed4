"""Errors a user can cause. Each message says what is wrong and what to do about it."""


class AvatarError(Exception):
    """Base of every user-facing error; the CLI prints it as one line, the API as a 4xx body."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidNameError(AvatarError):
    """An avatar name that is empty, too long or would escape the data directory."""


class AvatarNotFoundError(AvatarError):
    """No avatar of that name in the data directory."""

    status_code = 404


class AvatarExistsError(AvatarError):
    """Registering over an existing avatar without --force."""

    status_code = 409


class ProtectedAvatarError(AvatarError):
    """Deleting the shipped default avatar, which the server falls back on."""

    status_code = 409


class InvalidImageError(AvatarError):
    """The photo cannot be read, is too large, or has no usable face."""


class InvalidAudioError(AvatarError):
    """The voice sample cannot be decoded or is unusable (silent, clipped, too short)."""


class InvalidTextError(AvatarError):
    """Empty or unreadable text to speak."""


class UnsupportedLanguageError(AvatarError):
    """A language that no installed synthesizer speaks."""


class OutputPathError(AvatarError):
    """The output file cannot be written where the user asked."""


class ConfigurationError(AvatarError):
    """A setting names a stage or a model path that does not exist."""


class StorageError(AvatarError):
    """The data directory cannot hold what is being saved (a full or read-only disk)."""

    status_code = 507
