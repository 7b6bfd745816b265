<?php
/**
 * A dependency-free PHP client of mtpoold: JSON-RPC 2.0 over HTTP POST on the daemon's
 * listener (the websocket's own address and token). PHP 8.1+, no extension beyond the
 * defaults of Debian's php-cli (json; the http:// stream wrapper, no curl).
 *
 *     require 'MtpooldClient.php';
 *     $client = MtpooldClient::fromTokenFile('http://127.0.0.1:8765', '/var/lib/mtpoold/token');
 *     $peer = $client->resolve('@example_news')['result'];       // ['kind' => 'channel', ...]
 *     $msgs = $client->getMessages('@example_news', [1, 2, 3])['result'];
 *     $config = $client->invoke('help.GetConfig')['result'];     // ['_' => 'Config', ...]
 *
 * Every job method returns the reply's result member: ['result' => ..., 'meta' => ['account',
 * 'proxy_key', 'attempts', 'elapsed_ms' (ms), 'shared', 'merged', 'age_s' (s)]].
 * Options (every job method): 'deadline_ms' (milliseconds), 'account', 'tags' (list of
 * strings), 'max_age_s' (seconds, read-only functions only).
 *
 * Errors: MtpooldError for every error the daemon answered (JSON-RPC errors and HTTP
 * refusals alike) with ->rpcCode, ->errorClass, ->retryAfterS (seconds or null), ->data,
 * ->httpStatus; MtpooldUnreachable when no answer came. Method shapes: docs/openrpc.json.
 * A unix-socket listener is not reachable with the http:// wrapper: listen on TCP
 * (loopback) for PHP, or use curl's CURLOPT_UNIX_SOCKET_PATH.
 */

declare(strict_types=1);

/** An error the daemon answered (a JSON-RPC error object). */
final class MtpooldError extends RuntimeException
{
    /** @param array<string, mixed> $data the error's data member */
    public function __construct(
        public readonly int $rpcCode,
        string $message,
        public readonly array $data,
        public readonly int $httpStatus,
    ) {
        parent::__construct($message, $rpcCode);
    }

    /** data.class: FLOOD_WAIT, PEER_NOT_FOUND, NO_ACCOUNT_AVAILABLE, UNAUTHORIZED, ... */
    public function errorClass(): string
    {
        return (string) ($this->data['class'] ?? 'UNKNOWN');
    }

    /** data.retry_after_s: seconds after which a retry makes sense, or null. */
    public function retryAfterS(): ?float
    {
        $v = $this->data['retry_after_s'] ?? null;
        return is_int($v) || is_float($v) ? (float) $v : null;
    }
}

/** No answer from the daemon (refused, timeout, connection lost, not JSON). */
final class MtpooldUnreachable extends RuntimeException
{
}

final class MtpooldClient
{
    /** Seconds waited beyond a job's deadline_ms for its reply. */
    public const REPLY_MARGIN_S = 10.0;
    /** Seconds a call without deadline_ms waits: the daemon's default job deadline + margin. */
    public const DEFAULT_TIMEOUT_S = 190.0;

    private int $nextId = 1;

    /**
     * @param string $url   http://HOST:PORT (the daemon's [daemon] listen); /rpc is added
     * @param string $token the bearer token (<state_dir>/token)
     */
    public function __construct(private readonly string $url, private readonly string $token)
    {
    }

    /** A client whose token is read from the daemon's token file. */
    public static function fromTokenFile(string $url, string $tokenFile): self
    {
        $token = @file_get_contents($tokenFile);
        if ($token === false || trim($token) === '') {
            throw new InvalidArgumentException("cannot read a token from $tokenFile");
        }
        return new self($url, trim($token));
    }

    /** Resolve a t.me link, @username or bare username to a peer summary. */
    public function resolve(string $linkOrUsername, array $options = []): array
    {
        return $this->call('resolve', self::job(['link_or_username' => $linkOrUsername], $options));
    }

    /**
     * @param ?list<int> $ids message ids of $peer (username, link or marked numeric id); null:
     *                        $peer is a message link (https://t.me/name/123), its id the one id
     */
    public function getMessages(string|int $peer, ?array $ids = null, array $options = []): array
    {
        $params = $ids === null ? ['peer' => $peer] : ['peer' => $peer, 'ids' => $ids];
        return $this->call('get_messages', self::job($params, $options));
    }

    /** A raw TL function by name ('help.GetConfig'); $args its arguments ('@name' peers). */
    public function invoke(string $method, array $args = [], array $options = []): array
    {
        $params = ['method' => $method, 'args' => $args === [] ? new stdClass() : $args];
        return $this->call('invoke', self::job($params, $options));
    }

    /** The daemon's statistics (the status method). */
    public function status(): array
    {
        return $this->call('status', null, 30.0);
    }

    /**
     * One JSON-RPC request; its result member.
     *
     * @throws MtpooldError       the daemon's error reply
     * @throws MtpooldUnreachable no reply
     */
    public function call(string $method, ?array $params = null, ?float $timeoutS = null): mixed
    {
        $request = $this->request($method, $params);
        [$status, $reply] = $this->post($request, $timeoutS ?? self::timeoutFor($params));
        return self::resultOf($reply, $status);
    }

    /**
     * Many requests in one POST (a JSON-RPC batch): the jobs run at once in the daemon.
     *
     * @param list<array{0: string, 1?: ?array}> $calls [method, params] pairs
     * @return list<mixed> in the order of $calls: each result, or the MtpooldError of a
     *                     request that failed (returned, not thrown)
     */
    public function batch(array $calls): array
    {
        $requests = [];
        $timeout = 0.0;
        foreach ($calls as $c) {
            $requests[] = $this->request($c[0], $c[1] ?? null);
            $timeout = max($timeout, self::timeoutFor($c[1] ?? null));
        }
        if ($requests === []) {
            return [];
        }
        [$status, $replies] = $this->post($requests, $timeout);
        if (!array_is_list($replies)) {
            self::resultOf($replies, $status); // the whole batch was refused: throws
        }
        $byId = [];
        foreach ($replies as $r) {
            $byId[$r['id'] ?? ''] = $r;
        }
        $out = [];
        foreach ($requests as $r) {
            try {
                $out[] = self::resultOf($byId[$r['id']] ?? null, $status);
            } catch (MtpooldError $e) {
                $out[] = $e;
            }
        }
        return $out;
    }

    private function request(string $method, ?array $params): array
    {
        $request = ['jsonrpc' => '2.0', 'id' => $this->nextId++, 'method' => $method];
        if ($params !== null) {
            $request['params'] = $params;
        }
        return $request;
    }

    private static function job(array $params, array $options): array
    {
        if ($options !== []) {
            $params['options'] = $options;
        }
        return $params;
    }

    private static function timeoutFor(?array $params): float
    {
        $ms = $params['options']['deadline_ms'] ?? null;
        return is_int($ms) || is_float($ms) ? $ms / 1000 + self::REPLY_MARGIN_S : self::DEFAULT_TIMEOUT_S;
    }

    private static function resultOf(mixed $reply, int $status): mixed
    {
        if (!is_array($reply)) {
            throw new MtpooldUnreachable('not a JSON-RPC reply');
        }
        if (isset($reply['error'])) {
            $e = $reply['error'];
            throw new MtpooldError(
                (int) ($e['code'] ?? -32603),
                (string) ($e['message'] ?? ''),
                is_array($e['data'] ?? null) ? $e['data'] : [],
                $status,
            );
        }
        return $reply['result'] ?? null;
    }

    /** @return array{0: int, 1: mixed} the HTTP status and the decoded body */
    private function post(array $payload, float $timeoutS): array
    {
        $body = json_encode($payload, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
        $context = stream_context_create(['http' => [
            'method' => 'POST',
            'protocol_version' => 1.1,
            'header' => "Authorization: Bearer {$this->token}\r\n"
                . "Content-Type: application/json\r\n"
                . "Connection: close\r\n",
            'content' => $body,
            'timeout' => $timeoutS,
            'ignore_errors' => true, // read the JSON-RPC error body of a 4xx/5xx too
        ]]);
        $url = rtrim($this->url, '/') . '/rpc';
        $text = @file_get_contents($url, false, $context);
        $headers = $http_response_header ?? [];
        if ($text === false || $headers === []) {
            $why = error_get_last()['message'] ?? 'no reply';
            throw new MtpooldUnreachable("no reply from $url: $why");
        }
        preg_match('{^HTTP/\S+\s+(\d{3})}', $headers[0], $m);
        $status = (int) ($m[1] ?? 0);
        try {
            $reply = json_decode($text, true, 512, JSON_THROW_ON_ERROR | JSON_BIGINT_AS_STRING);
        } catch (JsonException) {
            throw new MtpooldUnreachable("HTTP $status reply from $url is not JSON");
        }
        return [$status, $reply];
    }
}
