// Unit tests of how the client splits a message body for display.
// Run: node --test clients/js/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { segments, safeHref } from '../../../gateway/static/client.js';

const join = (segs) => segs.map((s) => s.text).join('');

test('marks mentions, hashtags and links from the enriched fields', () => {
  const body = 'hi @bob see https://example.org/a?b=1 #rust';
  const segs = segments(body, { mentions: ['bob'], hashtags: ['rust'], links: ['https://example.org/a?b=1'] });
  assert.equal(join(segs), body);
  assert.deepEqual(
    segs.map((s) => [s.type, s.text]),
    [
      ['text', 'hi '],
      ['mention', '@bob'],
      ['text', ' see '],
      ['link', 'https://example.org/a?b=1'],
      ['text', ' '],
      ['hashtag', '#rust'],
    ],
  );
  assert.equal(segs[3].href, 'https://example.org/a?b=1');
});

test('marks only what the gateway found, and nothing inside words or links', () => {
  const body = 'mail a@bob.org, #1 and https://x.org/#top @carol: @dave';
  const segs = segments(body, { mentions: ['carol', 'bob'], hashtags: ['top'], links: ['https://x.org/#top'] });
  assert.equal(join(segs), body);
  assert.deepEqual(
    segs.filter((s) => s.type !== 'text').map((s) => [s.type, s.text]),
    [
      ['link', 'https://x.org/#top'],
      ['mention', '@carol'],
    ],
  );
});

test('only http and https links become links', () => {
  const body = 'javascript:alert(1) data:text/html,x https://ok.example';
  const segs = segments(body, { links: ['javascript:alert(1)', 'data:text/html,x', 'https://ok.example'] });
  assert.deepEqual(
    segs.filter((s) => s.type === 'link').map((s) => s.href),
    ['https://ok.example/'],
  );
  assert.equal(safeHref('JAVASCRIPT:alert(1)'), null);
  assert.equal(safeHref('http://a.example/x'), 'http://a.example/x');
  assert.equal(safeHref(42), null);
});

test('markup in a body stays text', () => {
  const body = '<img src=x onerror=alert(1)> #tag';
  const segs = segments(body, { hashtags: ['tag'] });
  assert.equal(join(segs), body);
  assert.deepEqual(segs[0], { type: 'text', text: '<img src=x onerror=alert(1)> ' });
});

test('survives missing or odd enriched data', () => {
  assert.deepEqual(segments('plain', undefined), [{ type: 'text', text: 'plain' }]);
  assert.deepEqual(segments('', {}), []);
  assert.deepEqual(segments('x', { links: [''], mentions: null }), [{ type: 'text', text: 'x' }]);
  const emoji = '😀#rust';
  assert.deepEqual(
    segments(emoji, { hashtags: ['rust'] }).map((s) => s.type),
    ['text', 'hashtag'],
  );
});
