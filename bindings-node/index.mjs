// ES module entry: the same objects as the CommonJS entry (index.js).
import cjs from './index.js'

export const {
  lock,
  lockSync,
  withLock,
  status,
  handoverComplete,
  prepare,
  UpdateLock,
  UpdateLockError,
  LockOptions,
  codes,
  takeOver,
  takeOverSync,
  HandoverServer,
  HandoverRequest,
  listenerFd,
  SupervisorApi,
  UpdateGate,
} = cjs
export default cjs
