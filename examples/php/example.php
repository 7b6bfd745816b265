<?php
/**
 * mtpoold from PHP: a resolve, messages, a raw TL call, and error handling.
 *
 *     php examples/php/example.php http://127.0.0.1:8765 /path/to/state/token [@channel]
 *
 * (or MTPOOLD_URL and MTPOOLD_TOKEN_FILE in the environment). Exit status 0 when every
 * step got an answer (an error answer included), 1 when the daemon was unreachable.
 */

declare(strict_types=1);

require __DIR__ . '/MtpooldClient.php';

$url = $argv[1] ?? getenv('MTPOOLD_URL') ?: 'http://127.0.0.1:8765';
$tokenFile = $argv[2] ?? getenv('MTPOOLD_TOKEN_FILE') ?: 'state/token';
$channel = $argv[3] ?? '@example_news';

$client = MtpooldClient::fromTokenFile($url, $tokenFile);

/**
 * Run $job; on FLOOD_WAIT or NO_ACCOUNT_AVAILABLE wait the daemon's retry_after_s (at most
 * $maxWaitS seconds) and try again, up to $tries times in all.
 */
function withRetry(callable $job, int $tries = 3, float $maxWaitS = 10.0): mixed
{
    for ($attempt = 1; ; $attempt++) {
        try {
            return $job();
        } catch (MtpooldError $e) {
            $wait = $e->retryAfterS();
            $retryable = in_array($e->errorClass(), ['FLOOD_WAIT', 'NO_ACCOUNT_AVAILABLE'], true);
            if (!$retryable || $wait === null || $wait > $maxWaitS || $attempt >= $tries) {
                throw $e;
            }
            printf("%s (code %d), retry_after_s=%g: retrying\n", $e->errorClass(), $e->rpcCode, $wait);
            usleep((int) ceil($wait * 1e6));
        }
    }
}

try {
    $peer = withRetry(fn () => $client->resolve($channel, ['deadline_ms' => 2000]));
    $r = $peer['result'];
    printf("resolve %s: %s id=%d title=%s via %s\n", $channel, $r['kind'], $r['id'],
        $r['title'] ?? $r['name'] ?? '', $peer['meta']['account']);

    $messages = withRetry(fn () => $client->getMessages($channel, [1, 2, 99]));
    foreach ($messages['result'] as $id => $m) {
        printf("message #%s: %s\n", $id, $m['exists'] ? "views={$m['views']}" : 'missing');
    }

    $config = withRetry(fn () => $client->invoke('help.GetConfig'));
    printf("invoke help.GetConfig: %s this_dc=%d\n", $config['result']['_'], $config['result']['this_dc']);

    try {
        $client->resolve('@nobody_by_that_name');
    } catch (MtpooldError $e) {
        printf("resolve @nobody_by_that_name: error %d %s (HTTP %d)\n", $e->rpcCode, $e->errorClass(), $e->httpStatus);
    }

    // many jobs in one POST: each entry a result or the MtpooldError of that job
    $batch = $client->batch([
        ['resolve', ['link_or_username' => $channel]],
        ['invoke', ['method' => 'help.GetNearestDc', 'args' => new stdClass()]],
        ['get_messages', ['peer' => $channel, 'ids' => [0]]],
    ]);
    foreach ($batch as $i => $entry) {
        printf("batch #%d: %s\n", $i, $entry instanceof MtpooldError
            ? "error {$entry->rpcCode} {$entry->errorClass()}" : 'ok via ' . $entry['meta']['account']);
    }

    $status = $client->status();
    printf("status: %d account(s)\n", count($status['accounts']));
} catch (MtpooldError $e) {
    fprintf(STDERR, "mtpoold error %d %s: %s\n", $e->rpcCode, $e->errorClass(), $e->getMessage());
    exit(1);
} catch (MtpooldUnreachable $e) {
    fprintf(STDERR, "mtpoold unreachable: %s\n", $e->getMessage());
    exit(1);
}
