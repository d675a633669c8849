'use strict'
// The package works from CommonJS and from ES modules (through package.json "exports"), and
// its TypeScript declarations compile a small typed example with `tsc --noEmit`.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const h = require('./helpers')

const API = ['lock', 'lockSync', 'withLock', 'status', 'handoverComplete', 'prepare', 'UpdateLock', 'UpdateLockError', 'LockOptions', 'codes', 'takeOver', 'takeOverSync', 'HandoverServer', 'HandoverRequest', 'listenerFd']

test('CommonJS: require("update-lock") has the whole API', () => {
  const ul = require('update-lock')
  for (const name of API) assert.ok(ul[name] !== undefined, name)
  assert.equal(typeof ul.lock, 'function')
})

test('ES module: named and default imports are the same objects as the CommonJS ones', async () => {
  const esm = await import('update-lock')
  const cjs = require('update-lock')
  for (const name of API) assert.equal(esm[name], cjs[name], name)
  assert.equal(esm.default, cjs)
})

test('ES module program in a child process takes and releases the lock', (t) => {
  const d = h.serviceDir(t)
  const src = `
    import { withLock, lockSync, UpdateLockError } from 'update-lock'
    const p = process.argv[1]
    const seen = await withLock((l) => l.paths, { paths: p })
    const l = lockSync({ paths: p })
    try { lockSync({ paths: p, timeout: 0 }) } catch (e) { console.log(e instanceof UpdateLockError, e.code) }
    l.release()
    console.log(JSON.stringify(seen))
  `
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src, d.lock], { cwd: h.PKG, encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  // lockSync() twice in one thread: the second could only wait for itself.
  assert.equal(r.stdout, `true already-held\n${JSON.stringify([d.lock])}\n`)
  assert.deepEqual(h.listing(d.svc), [])
})

test('TypeScript: tsc --noEmit accepts the typed example (and its @ts-expect-error lines)', () => {
  const tsc = path.join(h.PKG, 'node_modules', 'typescript', 'bin', 'tsc')
  const r = spawnSync(process.execPath, [tsc, '--noEmit', '-p', path.join(__dirname, 'types', 'tsconfig.json')], {
    cwd: h.PKG,
    encoding: 'utf8',
  })
  assert.equal(r.status, 0, r.stdout + r.stderr)
})

test('await using: TypeScript compiles it for Node 20/22, and the lock is released at the end of the block', (t) => {
  const d = h.serviceDir(t)
  const out = path.join(d.base, 'out')
  const src = path.join(d.base, 'using.ts')
  fs.writeFileSync(
    src,
    `import { lock } from ${JSON.stringify(h.PKG)}
import { existsSync } from 'node:fs'
async function main(): Promise<void> {
  {
    await using held = await lock({ paths: [${JSON.stringify(d.lock)}], timeout: 0 })
    console.log('inside', existsSync(${JSON.stringify(d.lock)}), held.held)
  }
  console.log('after', existsSync(${JSON.stringify(d.lock)}))
}
main()
`,
  )
  const tsc = path.join(h.PKG, 'node_modules', 'typescript', 'bin', 'tsc')
  const args = ['--target', 'ES2022', '--lib', 'ES2022,ESNext.Disposable', '--module', 'commonjs']
  args.push('--types', 'node', '--typeRoots', path.join(h.PKG, 'node_modules', '@types'))
  args.push('--skipLibCheck', '--outDir', out, src)
  const c = spawnSync(process.execPath, [tsc, ...args], { cwd: h.PKG, encoding: 'utf8' })
  assert.equal(c.status, 0, c.stdout + c.stderr)
  const r = spawnSync(process.execPath, [path.join(out, 'using.js')], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout, 'inside true true\nafter false\n')
})

test('a package whose addon npm left out says which one, the likely reasons and what to do', (t) => {
  // The package's JavaScript without any addon beside it or in node_modules above it: what
  // an install gets when npm skips the optional dependency (old Node.js, --omit=optional).
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'ul-no-addon-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const pkg = path.join(__dirname, '..')
  for (const f of ['index.js', 'native.js', 'package.json']) fs.copyFileSync(path.join(pkg, f), path.join(dir, f))
  const r = spawnSync(process.execPath, ['-e', `try { require(${JSON.stringify(dir)}) } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, cause: String(e.cause) })) }`], {
    encoding: 'utf8',
  })
  assert.equal(r.status, 0, r.stderr)
  const e = JSON.parse(r.stdout)
  assert.equal(e.code, 'MODULE_NOT_FOUND')
  assert.match(e.message, new RegExp(`no native addon loaded for ${process.platform}-${process.arch} \\(Node\\.js ${process.version.replace(/\./g, '\\.')}\\)`))
  assert.ok(e.message.includes(`optional dependency update-lock-${process.platform}-${process.arch}-<gnu|musl|gnueabihf>`), e.message)
  assert.match(e.message, /engines range \(\^20\.17\.0/)
  assert.match(e.message, /upgrade Node\.js, or build the addon from source/)
  assert.match(e.cause, /Cannot find native binding/)
})
